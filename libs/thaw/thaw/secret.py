"""``thaw.Secret``: environment variables a function gets at run time.

A spec names its secrets (``FunctionSpec.secrets``), never holds their values.
``Secret.from_name`` refers to a secret made with ``thaw secret create``; one
made from values here (``from_dict``, ``from_dotenv``, ``from_local_environ``)
is kept in this process until the deploy stores it on the gateway, under the
app's scope, and refers to it by name. The agent fetches the values for each
container it starts or restores and hands them over as its environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import msgspec
from thaw_core.api import SecretCreate, SecretInfo, SecretValues
from thaw_core.schema import FunctionSpec, SecretRef, check_name

from thaw._env import is_local
from thaw.client import current
from thaw.exception import InvalidError

# Values made here, by a local id, until the deploy stores them.
_LOCAL_VALUES: dict[str, dict[str, str]] = {}


class Secret:
    def __init__(
        self,
        *,
        name: str | None = None,
        required_keys: Sequence[str] = (),
        values: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.required_keys = list(required_keys)
        self._local_id: str | None = None
        if values:
            self._local_id = "local-" + secrets.token_hex(8)
            _LOCAL_VALUES[self._local_id] = dict(values)

    @property
    def keys(self) -> list[str]:
        """The keys this secret sets, when it is made from values here."""
        return sorted(_LOCAL_VALUES.get(self._local_id or "", {}))

    def ref(self) -> SecretRef | None:
        """How a spec names this secret; None for one made from no values."""
        if self.name is not None:
            return SecretRef(name=self.name, required_keys=self.required_keys)
        if self._local_id is not None:
            return SecretRef(name=self._local_id, app_scoped=True)
        return None

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        environment_name: str | None = None,
        required_keys: Sequence[str] = (),
    ) -> Secret:
        if environment_name is not None:
            raise InvalidError(
                "Secret.from_name(environment_name=...): thaw has one environment; leave it out"
            )
        if isinstance(required_keys, str) or not all(isinstance(k, str) for k in required_keys):
            raise InvalidError(f"required_keys takes a list of key names, got {required_keys!r}")
        try:
            return cls(name=check_name("secret", name), required_keys=required_keys)
        except ValueError as e:
            raise InvalidError(str(e)) from None

    @classmethod
    def from_dict(cls, env: Mapping[str, str | None]) -> Secret:
        bad = [
            k
            for k, v in env.items()
            if not isinstance(k, str) or not isinstance(v, (str, type(None)))
        ]
        if bad:
            raise InvalidError(f"Secret.from_dict takes str -> str, bad keys: {bad!r}")
        return cls(values={k: v for k, v in env.items() if v is not None})

    @classmethod
    def from_local_environ(cls, env_keys: Sequence[str]) -> Secret:
        if not is_local():
            # In the container the keys are set already, from this very secret.
            return cls()
        missing = [k for k in env_keys if k not in os.environ]
        if missing:
            raise InvalidError(f"Secret.from_local_environ: not set here: {', '.join(missing)}")
        return cls(values={k: os.environ[k] for k in env_keys})

    @classmethod
    def from_dotenv(cls, path: str | Path | None = None, *, filename: str = ".env") -> Secret:
        """The variables of a ``.env`` file: ``path`` itself when it is a file,
        else ``filename`` in ``path`` (default: the working directory)."""
        if not is_local():
            return cls()
        where = Path(path).expanduser() if path is not None else Path.cwd()
        file = where if where.is_file() else where / filename
        try:
            text = file.read_text()
        except OSError as e:
            raise InvalidError(f"Secret.from_dotenv: cannot read {file}: {e.strerror}") from None
        return cls(values=parse_dotenv(text, str(file)))

    def __repr__(self) -> str:
        if self.name:
            return f"Secret.from_name({self.name!r})"
        return f"Secret(keys={self.keys})"


# KEY=VALUE, optionally after "export", the value bare (a "#" after a space
# starts a comment), 'single-quoted' (as is) or "double-quoted" (\n, \", \\).
_DOTENV_LINE = re.compile(
    r"""^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"""
    r"""(?:'([^']*)'|"((?:[^"\\]|\\.)*)"|([^#]*?))\s*(?:\#.*)?$"""
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def parse_dotenv(text: str, where: str = ".env") -> dict[str, str]:
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _DOTENV_LINE.match(line)
        if m is None:
            # The line is not shown: it may hold a value.
            raise InvalidError(f"{where}:{number}: not a KEY=VALUE line")
        key, single, double, bare = m.groups()
        if single is not None:
            env[key] = single
        elif double is not None:
            env[key] = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e[1], "\\" + e[1]), double)
        else:
            env[key] = bare
    return env


def refs(secrets_: Sequence[Secret]) -> list[SecretRef]:
    """How a spec names these secrets, in order (later ones override earlier ones)."""
    if isinstance(secrets_, Secret) or not all(isinstance(s, Secret) for s in secrets_):
        raise InvalidError(f"secrets takes a list of thaw.Secret, got {secrets_!r}")
    return [r for s in secrets_ if (r := s.ref()) is not None]


# ---------------------------------------------------------------- the gateway


def _stored_name(function: str, index: int) -> str:
    """The name a function's values-made secret is stored under in its app:
    the same at every deploy, so a redeploy replaces the values."""
    name = f"{function}-{index}"
    if len(name) <= 63:
        return name
    return f"{function[:40]}-{hashlib.sha256(function.encode()).hexdigest()[:12]}-{index}"


async def store_local_values(app: str, specs: Sequence[FunctionSpec]) -> list[FunctionSpec]:
    """The specs with their values-made secrets stored on the gateway under
    ``app`` and named there, so that no value travels in a spec."""
    out: list[FunctionSpec] = []
    for spec in specs:
        named: list[SecretRef] = []
        for index, ref in enumerate(spec.secrets):
            if ref.app_scoped:
                values = _LOCAL_VALUES.get(ref.name)
                if values is None:
                    raise InvalidError(
                        f"{spec.name}: a secret made from values is not in this process"
                        " (made in another one?); make it where the app is deployed"
                    )
                ref = SecretRef(name=_stored_name(spec.name, index), app_scoped=True)
                await put_app_values(app, ref.name, values)
            named.append(ref)
        out.append(msgspec.structs.replace(spec, secrets=named))
    return out


T = TypeVar("T")


async def _request(
    method: str, path: str, answer: type[T], body: msgspec.Struct | None = None
) -> T:
    return await current().json_request(method, path, answer, "a secret", body=body, ok=(200, 201))


async def put_app_values(app: str, name: str, values: Mapping[str, str]) -> SecretInfo:
    path = f"/v1/apps/{quote(app, safe='')}/secrets/{quote(name, safe='')}"
    return await _request("PUT", path, SecretInfo, SecretValues(env=dict(values)))


async def create(name: str, values: Mapping[str, str], *, force: bool = False) -> SecretInfo:
    body = SecretCreate(name=name, env=dict(values), force=force)
    return await _request("POST", "/v1/secrets", SecretInfo, body)


async def list_all() -> list[SecretInfo]:
    return await _request("GET", "/v1/secrets", list[SecretInfo])


async def delete(name: str) -> SecretInfo:
    return await _request("DELETE", f"/v1/secrets/{quote(name, safe='')}", SecretInfo)
