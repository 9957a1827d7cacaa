"""Secrets in Postgres, sealed with the gateway's key ring (``secretbox``).

A row is one secret: its key names in clear (listing and deploy checks need
them), its values as one AES-GCM ciphertext of the JSON object. Scope ``''``
holds the named secrets of ``thaw secret create``; an app's name scopes the
values its deploys store for its own functions.

Nothing here puts a value into an exception, a log line or a return value
other than ``values`` and ``environment``: callers may log the errors raised.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import msgspec
from thaw_core.api import SecretInfo
from thaw_core.db import Database

from thaw_gateway.secretbox import Sealed, SecretBox, load_box

log = logging.getLogger("thaw.gateway")

NAMED = ""
# What a process environment can hold under a name.
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
MAX_SECRET_BYTES = 64 * 1024

_values = msgspec.json.Decoder(dict[str, str])


class SecretProblem(ValueError):
    """A secret that cannot be stored or used, said without its values."""


class Reference(Protocol):
    """What a function spec says about one of its secrets."""

    @property
    def name(self) -> str: ...
    @property
    def required_keys(self) -> list[str]: ...
    @property
    def app_scoped(self) -> bool: ...


@dataclass(frozen=True)
class Stored:
    scope: str
    name: str
    keys: list[str]
    sealed: Sealed
    created_at: float
    updated_at: float

    def info(self) -> SecretInfo:
        return SecretInfo(
            name=self.name, keys=self.keys, created_at=self.created_at, updated_at=self.updated_at
        )


def check_env(env: Mapping[str, str]) -> None:
    """Keys must be environment variable names; values strings a process env can hold."""
    if not env:
        raise SecretProblem("a secret holds at least one KEY=VALUE")
    for key, value in env.items():
        if not ENV_KEY_RE.fullmatch(key):
            raise SecretProblem(
                f"invalid key {key!r}: use letters, digits and '_', not starting with a digit"
            )
        if "\0" in value:
            raise SecretProblem(f"the value of {key} holds a NUL byte, which no environment can")
    size = sum(len(k) + len(v.encode()) for k, v in env.items())
    if size > MAX_SECRET_BYTES:
        raise SecretProblem(f"a secret holds at most {MAX_SECRET_BYTES} bytes, this one {size}")


def _aad(scope: str, name: str) -> bytes:
    return f"thaw-secret\0{scope}\0{name}".encode()


_COLUMNS = """scope, name, keys, key_id, nonce, value,
    extract(epoch FROM created_at)::float8 AS created_at,
    extract(epoch FROM updated_at)::float8 AS updated_at"""


def _stored(row: Mapping[str, object]) -> Stored:
    return Stored(
        scope=str(row["scope"]),
        name=str(row["name"]),
        keys=list(row["keys"]),  # type: ignore[call-overload]
        sealed=Sealed(str(row["key_id"]), bytes(row["nonce"]), bytes(row["value"])),  # type: ignore[arg-type]
        created_at=float(row["created_at"]),  # type: ignore[arg-type]
        updated_at=float(row["updated_at"]),  # type: ignore[arg-type]
    )


def _where(app: str, ref: Reference) -> tuple[str, str]:
    return (app if ref.app_scoped else NAMED, ref.name)


def _problems(
    app: str, refs: Sequence[Reference], found: Mapping[tuple[str, str], Stored]
) -> list[str]:
    out: list[str] = []
    for ref in refs:
        stored = found.get(_where(app, ref))
        if stored is None:
            out.append(
                f"the secret values of app {app!r} ({ref.name}) are not stored; deploy it again"
                if ref.app_scoped
                else f"secret {ref.name!r} does not exist (thaw secret create {ref.name} KEY=VALUE)"
            )
            continue
        missing = [k for k in ref.required_keys if k not in stored.keys]
        if missing:
            out.append(
                f"secret {ref.name!r} lacks the required key(s) {', '.join(missing)}"
                f" (it has {', '.join(stored.keys)})"
            )
    return out


class SecretStore:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    def _seal(self, scope: str, name: str, env: Mapping[str, str]) -> Sealed:
        return self.box.seal(msgspec.json.encode(dict(env)), _aad(scope, name))

    async def put(
        self, scope: str, name: str, env: Mapping[str, str], *, replace: bool
    ) -> Stored | None:
        """Store ``env`` under ``name``; None when it exists and ``replace`` is off."""
        check_env(env)
        sealed = self._seal(scope, name, env)
        on_conflict = (
            "DO UPDATE SET keys = EXCLUDED.keys, key_id = EXCLUDED.key_id,"
            " nonce = EXCLUDED.nonce, value = EXCLUDED.value, updated_at = now()"
            if replace
            else "DO NOTHING"
        )
        row = await self.db.fetchrow(
            "INSERT INTO secrets (scope, name, keys, key_id, nonce, value)"
            f" VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, name) {on_conflict}"
            f" RETURNING {_COLUMNS}",
            scope,
            name,
            sorted(env),
            sealed.key_id,
            sealed.nonce,
            sealed.ciphertext,
        )
        return None if row is None else _stored(row)

    async def list(self, scope: str = NAMED) -> list[Stored]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM secrets WHERE scope = $1 ORDER BY name", scope
        )
        return [_stored(r) for r in rows]

    async def delete(self, scope: str, name: str) -> Stored | None:
        row = await self.db.fetchrow(
            f"DELETE FROM secrets WHERE scope = $1 AND name = $2 RETURNING {_COLUMNS}", scope, name
        )
        return None if row is None else _stored(row)

    def values(self, stored: Stored) -> dict[str, str]:
        return _values.decode(self.box.open(stored.sealed, _aad(stored.scope, stored.name)))

    async def _rows(self, app: str, refs: Iterable[Reference]) -> dict[tuple[str, str], Stored]:
        wanted = {_where(app, r) for r in refs}
        if not wanted:
            return {}
        scopes, names = zip(*wanted, strict=True)
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM secrets"
            " WHERE (scope, name) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            list(scopes),
            list(names),
        )
        return {(r["scope"], r["name"]): _stored(r) for r in rows}

    async def problems(self, app: str, refs: Sequence[Reference]) -> list[str]:
        """Why these references cannot be resolved: a missing secret or key, one line each."""
        return _problems(app, refs, await self._rows(app, refs))

    async def environment(self, app: str, refs: Sequence[Reference]) -> dict[str, str]:
        """The environment these secrets make, later ones overriding earlier
        ones. Raises ``SecretProblem`` naming what is missing."""
        found = await self._rows(app, refs)
        problems = _problems(app, refs, found)
        if problems:
            raise SecretProblem("; ".join(problems))
        env: dict[str, str] = {}
        for ref in refs:
            env.update(self.values(found[_where(app, ref)]))
        return env

    async def reencrypt(self) -> int:
        """Seal every secret not under the current key again under it (the
        second half of a key rotation); the number of secrets moved."""
        moved = 0
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM secrets WHERE key_id <> $1", self.box.current
        )
        for stored in map(_stored, rows):
            sealed = self._seal(stored.scope, stored.name, self.values(stored))
            # Only if the row is as read: a concurrent update is sealed already.
            done = await self.db.fetchval(
                "UPDATE secrets SET key_id = $3, nonce = $4, value = $5"
                " WHERE scope = $1 AND name = $2 AND key_id = $6 AND nonce = $7 RETURNING 1",
                stored.scope,
                stored.name,
                sealed.key_id,
                sealed.nonce,
                sealed.ciphertext,
                stored.sealed.key_id,
                stored.sealed.nonce,
            )
            moved += done is not None
        if moved:
            log.info(
                "secrets re-encrypted under the current key",
                extra={"secrets": moved, "key_id": self.box.current},
            )
        return moved


async def open_secrets(db: Database, state_dir: Path) -> SecretStore:
    """The store under the key ring of this gateway's environment, with every
    secret moved to its current key (finishing a rotation)."""
    store = SecretStore(db, load_box(state_dir))
    await store.reencrypt()
    return store
