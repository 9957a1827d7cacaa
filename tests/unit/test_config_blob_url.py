"""THAW_BLOB_URL_FILE: the blob store's URL, S3 keys included, read from a
mounted secret and never handed on through the environment."""

from __future__ import annotations

import pytest
from thaw_core.config import ConfigError, Settings

URL = "s3://AKEY:SKEY@minio:9000/thaw?secure=false"


def test_the_url_is_read_from_the_file_and_children_get_the_file(tmp_path):
    secret = tmp_path / "blob-url"
    secret.write_text(URL + "\n")
    s = Settings.from_env({"THAW_STATE_DIR": str(tmp_path), "THAW_BLOB_URL_FILE": str(secret)})
    assert s.blob_url == URL
    env = s.to_env()
    assert "THAW_BLOB_URL" not in env
    assert not any("SKEY" in v for v in env.values())
    assert Settings.from_env(env).blob_url == URL


def test_an_explicit_url_wins_and_is_passed_on(tmp_path):
    s = Settings.from_env({"THAW_STATE_DIR": str(tmp_path), "THAW_BLOB_URL": URL,
                           "THAW_BLOB_URL_FILE": str(tmp_path / "absent")})
    assert s.blob_url == URL and s.to_env()["THAW_BLOB_URL"] == URL


@pytest.mark.parametrize("content", [None, ""])
def test_a_missing_or_empty_file_is_a_clear_error(tmp_path, content):
    secret = tmp_path / "blob-url"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ConfigError, match="THAW_BLOB_URL_FILE"):
        Settings.from_env({"THAW_STATE_DIR": str(tmp_path), "THAW_BLOB_URL_FILE": str(secret)})
