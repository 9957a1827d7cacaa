"""A Dockerfile's USER as the ids it has in the image (thaw_core.image_users),
read from the image's own /etc/passwd and /etc/group as Docker reads them,
and as the OCI process user the builder and the agent give runc."""

from __future__ import annotations

from pathlib import Path

import pytest
from thaw_core.image_users import ROOT, ImageUser, UserError, image_user, oci_user

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
appuser:x:1234:1234::/home/appuser:/bin/sh
svc:x:999:999::/srv:/usr/sbin/nologin
"""
GROUP = """\
root:x:0:
appuser:x:1234:
svc:x:999:
audio:x:29:appuser
video:x:44:svc,appuser
"""


@pytest.fixture
def image(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


def test_names_and_numbers_resolve_through_the_images_files(image: Path) -> None:
    assert image_user("", image) == ROOT and image_user("root", image) == ROOT
    assert image_user("appuser", image) == ImageUser(1234, 1234, "/home/appuser", (29, 44))
    assert image_user("1234", image) == image_user("appuser", image)
    assert image_user("svc", image) == ImageUser(999, 999, "/srv", (44,))
    # A uid the image does not list runs with gid 0 and home /, as in Docker.
    assert image_user("4321", image) == ImageUser(4321, 0, "/")


def test_a_named_group_replaces_the_users_groups(image: Path) -> None:
    assert image_user("appuser:video", image) == ImageUser(1234, 44, "/home/appuser")
    assert image_user("appuser:7", image) == ImageUser(1234, 7, "/home/appuser")


def test_unknown_names_are_refused_naming_them(image: Path) -> None:
    with pytest.raises(UserError, match="'nobody' is not in the image's /etc/passwd"):
        image_user("nobody", image)
    with pytest.raises(UserError, match="'wheel' is not in the image's /etc/group"):
        image_user("appuser:wheel", image)


def test_the_oci_user_carries_the_supplementary_groups(image: Path) -> None:
    assert oci_user(ROOT) == {"uid": 0, "gid": 0}
    assert oci_user(image_user("appuser", image)) == {
        "uid": 1234,
        "gid": 1234,
        "additionalGids": [29, 44],
    }
