"""Where the gateway is and who we are, first found wins:

1. ``THAW_GATEWAY_URL`` / ``THAW_TOKEN`` in the environment;
2. ``$XDG_CONFIG_HOME/thaw/config.toml`` (``~/.config/thaw/config.toml``),
   table ``[default]`` or the one ``THAW_PROFILE`` names: ``gateway_url``, ``token``;
3. the embedded stack of this machine (``thaw up``): its gateway address from
   ``THAW_GATEWAY_HOST``/``PORT`` and its ``<state_dir>/admin-token``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from thaw import exception


class ClientConfig(NamedTuple):
    gateway_url: str
    token: str | None


CONFIG_ENV = (
    "THAW_GATEWAY_URL",
    "THAW_TOKEN",
    "THAW_GATEWAY_HOST",
    "THAW_GATEWAY_PORT",
    "THAW_STATE_DIR",
    "THAW_PROFILE",
    "XDG_STATE_HOME",
    "XDG_CONFIG_HOME",
    "HOME",
)


def config_file(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "thaw" / "config.toml"


def _profile(env: Mapping[str, str]) -> dict[str, Any]:
    path = config_file(env)
    try:
        text = path.read_text()
    except OSError:
        return {}
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise exception.InvalidError(f"{path}: not valid TOML: {e}") from None
    name = env.get("THAW_PROFILE") or "default"
    profile = data.get(name)
    if profile is None and name != "default":
        raise exception.InvalidError(f"{path} has no [{name}] profile (THAW_PROFILE={name})")
    return profile or {}


def _admin_token(state_dir: Path) -> str | None:
    # The file thaw.stack.state.StackPaths.admin_token_file names, read here
    # without importing thaw.stack, whose package pulls in the whole supervisor.
    try:
        return (state_dir / "admin-token").read_text().strip() or None
    except OSError:
        return None


def load_config(env: Mapping[str, str] | None = None) -> ClientConfig:
    from thaw_core.config import Settings

    e = os.environ if env is None else env
    profile = _profile(e)
    url = e.get("THAW_GATEWAY_URL") or profile.get("gateway_url")
    token = e.get("THAW_TOKEN") or profile.get("token")
    if not url or not token:
        settings = Settings.from_env(dict(e))
        url = url or settings.gateway_url
        if not token:
            token = _admin_token(settings.state_dir)
    return ClientConfig(gateway_url=url.rstrip("/"), token=token or None)
