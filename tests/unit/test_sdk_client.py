"""Where the SDK finds the gateway and its token."""

from __future__ import annotations

from pathlib import Path

import pytest
from thaw.client import load_config
from thaw.exception import InvalidError


def test_environment_wins(tmp_path: Path) -> None:
    env = {"THAW_GATEWAY_URL": "http://gw:1/", "THAW_TOKEN": "tok", "HOME": str(tmp_path)}
    config = load_config(env)
    assert config.gateway_url == "http://gw:1" and config.token == "tok"


def test_config_file_profile(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "thaw" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text(
        '[default]\ngateway_url = "http://a:1"\ntoken = "ta"\n[prod]\ngateway_url = "http://b:2"\ntoken = "tb"\n'
    )
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "THAW_STATE_DIR": str(tmp_path / "state")}
    assert load_config(env) == ("http://a:1", "ta")
    assert load_config({**env, "THAW_PROFILE": "prod"}) == ("http://b:2", "tb")
    assert load_config({**env, "THAW_TOKEN": "override"}).token == "override"
    with pytest.raises(InvalidError, match=r"no \[staging\] profile"):
        load_config({**env, "THAW_PROFILE": "staging"})


def test_local_stack_admin_token_and_address(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "admin-token").write_text("thaw_admin\n")
    env = {"THAW_STATE_DIR": str(state), "THAW_GATEWAY_PORT": "29999", "HOME": str(tmp_path)}
    assert load_config(env) == ("http://127.0.0.1:29999", "thaw_admin")


def test_no_token_anywhere_is_none(tmp_path: Path) -> None:
    env = {"THAW_STATE_DIR": str(tmp_path / "none"), "HOME": str(tmp_path)}
    assert load_config(env).token is None


def test_broken_config_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "thaw" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text("gateway_url = \n")
    with pytest.raises(InvalidError, match="not valid TOML"):
        load_config({"XDG_CONFIG_HOME": str(tmp_path), "THAW_STATE_DIR": str(tmp_path)})
