"""Postgres access for every service: a pool, schema migrations, and query
proxies that survive a Postgres restart.

- ``json`` and ``jsonb`` columns take and return Python objects (encoded with
  msgspec) on every connection of the pool, not strings.
- ``execute``/``fetch``/``fetchrow``/``fetchval``/``ping`` retry ONCE when the
  connection was lost (Postgres restarted, crashed, or dropped us). The retry
  waits up to ``reconnect_timeout_s`` for Postgres to accept connections
  again. A statement whose connection died while it ran may have committed
  before the error reached us, so the retry can run it twice: keep writes
  idempotent (upserts, ``ON CONFLICT DO NOTHING``), which at-least-once
  delivery asks of them anyway. ``transaction()`` is never retried.
- ``migrate()`` applies ``thaw_core/migrations/NNNN_name.sql`` in order of
  NNNN, each in its own transaction (so a migration cannot use
  ``CREATE INDEX CONCURRENTLY``), recorded in ``schema_migrations``, the whole
  run under an advisory lock so that services starting together are safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

log = logging.getLogger(__name__)

# pg_advisory_lock key for migrations: "thaw" in ASCII, then 1.
_MIGRATION_LOCK = 0x7468617700000001
_MIGRATION_FILE = re.compile(r"^(\d+)_([A-Za-z0-9][A-Za-z0-9_\-]*)\.sql$")

# Errors that say the server is not there (yet, or any more), as opposed to
# errors about the query.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, broken pipe
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError among them
    asyncpg.AdminShutdownError,  # 57P01: the server is shutting down (fast/smart stop)
    asyncpg.CrashShutdownError,  # 57P02: another backend crashed, everyone is thrown out
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
)
# While a query runs on a connection we had.
_LOST_MIDWAY: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)
# While connecting only: the server is up but our database is not created yet
# (PgCluster.start() creates it once the server is up).
_NOT_YET: tuple[type[BaseException], ...] = (
    *_UNREACHABLE,
    asyncpg.InvalidCatalogNameError,
    asyncpg.TooManyConnectionsError,
)


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str  # the file name without ".sql", e.g. "0001_core"
    sql: str


def load_migrations(source: Traversable | Path | None = None) -> list[Migration]:
    """The migrations in ``source`` (default: the package's own), in order.

    Two files with one version (two branches that picked the same number) and
    a ``.sql`` file whose name does not parse are refused rather than applied
    in some arbitrary order or silently skipped."""
    root: Traversable | Path = source or importlib.resources.files("thaw_core") / "migrations"
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _MIGRATION_FILE.match(entry.name)
        if not m:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        version = int(m.group(1))
        mig = Migration(version, entry.name[: -len(".sql")], entry.read_text(encoding="utf-8"))
        if version in found:
            raise MigrationError(
                f"migrations {found[version].name!r} and {mig.name!r} share version {version}"
            )
        found[version] = mig
    return [found[v] for v in sorted(found)]


def _json_encode(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _init_connection(con: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await con.set_type_codec(
            typ, encoder=_json_encode, decoder=msgspec.json.decode, schema="pg_catalog"
        )


class _ConnectionLost(Exception):
    """Internal: the query failed because its connection died."""


class Database:
    def __init__(self, pool: asyncpg.Pool, dsn: str, reconnect_timeout_s: float) -> None:
        self.pool = pool
        self.dsn = dsn
        self.reconnect_timeout_s = reconnect_timeout_s

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        password: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 30,
        reconnect_timeout_s: float = 15,
    ) -> Database:
        """A pool on ``dsn``, retrying until Postgres accepts connections or
        ``connect_timeout_s`` passes (services may start before Postgres).
        ``password``: when the URL carries none (``Settings.database_password()``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + connect_timeout_s
        delay = 0.05
        while True:
            remaining = deadline - loop.time()
            pool = asyncpg.create_pool(
                dsn,
                password=password,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                timeout=max(1.0, min(10.0, remaining)),
            )
            try:
                await pool
                return cls(pool, dsn, reconnect_timeout_s)
            except _NOT_YET as exc:
                # A pool that opened some of its min_size connections keeps them.
                pool.terminate()
                if loop.time() + delay >= deadline:
                    raise TimeoutError(
                        f"Postgres at {_redact(dsn)} not reachable after {connect_timeout_s}s: {exc!r}"
                    ) from exc
                log.debug("Postgres not reachable yet (%r); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except BaseException:
                pool.terminate()
                raise

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except TimeoutError:
            # Someone still holds a connection: don't hang a shutdown on it.
            self.pool.terminate()

    # ------------------------------------------------------------ queries

    async def execute(self, query: str, *args: Any) -> str:
        return await self._call("execute", query, args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return await self._call("fetch", query, args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        return await self._call("fetchrow", query, args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._call("fetchval", query, args)

    async def ping(self) -> None:
        await self._call("fetchval", "SELECT 1", ())

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction (committed on normal exit,
        rolled back on an exception). Not retried: a transaction's body cannot
        be replayed without the caller."""
        async with self.pool.acquire() as con, con.transaction():
            yield con

    async def _call(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        try:
            return await self._once(method, query, args, wait_s=0)
        except _ConnectionLost as lost:
            first = lost.__cause__
            log.warning("Postgres connection lost (%r); reconnecting and retrying once", first)
        # Every idle connection of the pool went down with the one we used:
        # have them all replaced, or the retry would just pick another corpse.
        await self.pool.expire_connections()
        try:
            return await self._once(method, query, args, wait_s=self.reconnect_timeout_s)
        except _ConnectionLost as lost:
            raise lost.__cause__ from None  # type: ignore[misc]

    async def _once(self, method: str, query: str, args: tuple[Any, ...], wait_s: float) -> Any:
        """Run one query. Raises _ConnectionLost (with the real error as its
        cause) when it failed for want of a live connection. Acquiring waits
        up to ``wait_s`` for the server to come back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        delay = 0.05
        while True:
            try:
                con = await self.pool.acquire()
                break
            except _UNREACHABLE as exc:
                if loop.time() + delay >= deadline:
                    raise _ConnectionLost() from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.25)
        try:
            return await getattr(con, method)(query, *args)
        except Exception as exc:
            # is_closed() also covers "InterfaceError: connection is closed",
            # a connection whose death the pool had not noticed when it handed
            # it out. A timeout on a live connection is not a lost connection.
            if isinstance(exc, _LOST_MIDWAY) or con.is_closed():
                raise _ConnectionLost() from exc
            raise
        finally:
            await self.pool.release(con)

    # ------------------------------------------------------------ migrations

    async def migrate(self, source: Traversable | Path | None = None) -> list[str]:
        """Apply the migrations not applied yet; return their names.
        ``source``: another directory of NNNN_name.sql files (tests)."""
        migrations = load_migrations(source)
        applied_now: list[str] = []
        async with self.pool.acquire() as con:
            # Session-level lock, held across the per-migration transactions;
            # a second service starting now waits here, then finds nothing to do.
            await con.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                await con.execute(
                    """
                    CREATE TABLE IF NOT EXISTS schema_migrations (
                        version    integer PRIMARY KEY,
                        name       text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now()
                    )
                    """
                )
                applied = {
                    r["version"]: r["name"]
                    for r in await con.fetch("SELECT version, name FROM schema_migrations")
                }
                for mig in migrations:
                    if mig.version in applied:
                        if applied[mig.version] != mig.name:
                            raise MigrationError(
                                f"version {mig.version} was applied as {applied[mig.version]!r} "
                                f"but the code now has {mig.name!r}: renumber the new migration"
                            )
                        continue
                    async with con.transaction():
                        await con.execute(mig.sql)
                        await con.execute(
                            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                            mig.version,
                            mig.name,
                        )
                    log.info("applied migration %s", mig.name)
                    applied_now.append(mig.name)
            finally:
                # If the connection died the lock died with it; and the pool's
                # reset on release unlocks all advisory locks anyway.
                with contextlib.suppress(Exception):
                    await con.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        return applied_now


def _redact(dsn: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", dsn)
