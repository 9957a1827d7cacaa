"""Database: migrations (order, once, concurrency, failures) and surviving
Postgres restarts; PgCluster: lifecycle and the foreground mode a supervisor
uses. Restart tests use a cluster of their own, never the session's."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from fixtures.postgres import ClusterFactory
from thaw.stack.pgcluster import PgCluster
from thaw_core.db import Database, MigrationError, load_migrations

MakeDb = Callable[..., Awaitable[Database]]
CORE_TABLES = ("nodes", "tokens", "apps", "secrets")


def write_migrations(d: Path, files: dict[str, str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (d / name).write_text(sql)
    return d


async def tables(db: Database) -> set[str]:
    rows = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


# ---------------------------------------------------------------- migrations


async def test_migrations_apply_once_in_order(make_db: MakeDb) -> None:
    db = await make_db(migrated=False)
    names = [m.name for m in load_migrations()]
    assert names[0] == "0001_core"

    assert await db.migrate() == names
    assert set(CORE_TABLES) | {"schema_migrations"} <= await tables(db)
    rows = await db.fetch(
        "SELECT version, name, applied_at FROM schema_migrations ORDER BY applied_at, version"
    )
    assert [r["name"] for r in rows] == names
    assert [r["version"] for r in rows] == sorted(r["version"] for r in rows)
    assert all(r["applied_at"] is not None for r in rows)

    assert await db.migrate() == []
    assert await db.fetchval("SELECT count(*) FROM schema_migrations") == len(names)


async def test_concurrent_migrate_is_serialised(make_db: MakeDb, tmp_path: Path) -> None:
    db = await make_db(migrated=False)
    other = await Database.connect(db.dsn)  # a second service on the same database
    try:
        # Slow migrations, so the two runs overlap for sure; without the lock
        # both would CREATE TABLE t and one would fail.
        src = write_migrations(
            tmp_path / "m",
            {
                # Numbers clear of the real migrations', which run next.
                "9001_a.sql": "CREATE TABLE t (x int); SELECT pg_sleep(0.2);",
                "9002_b.sql": "ALTER TABLE t ADD COLUMN y int; SELECT pg_sleep(0.1);",
            },
        )
        a, b = await asyncio.gather(db.migrate(src), other.migrate(src))
        assert sorted(a + b) == ["9001_a", "9002_b"]
        assert [] in (a, b)  # one did everything, the other found it done

        # And the real migrations, the way services starting together run them.
        results = await asyncio.gather(*(d.migrate() for d in (db, other, db, other)))
        assert sorted(n for r in results for n in r) == [m.name for m in load_migrations()]
    finally:
        await other.close()
    assert await db.fetchval("SELECT count(*) FROM schema_migrations") == 2 + len(load_migrations())


async def test_numeric_order_and_failed_migration_rolls_back(
    make_db: MakeDb, tmp_path: Path
) -> None:
    db = await make_db(migrated=False)
    src = write_migrations(
        tmp_path / "m",
        {
            # Listed out of order on purpose; 0010 must run after 0003.
            "0010_fill.sql": "INSERT INTO t (a, b) VALUES (1, 2);",
            "0002_col.sql": "ALTER TABLE t ADD COLUMN b int;",
            "0001_table.sql": "CREATE TABLE t (a int);",
            "0003_bad.sql": "CREATE TABLE partial (x int); SELECT 1/0;",
            "README.md": "not a migration",
        },
    )
    with pytest.raises(asyncpg.DivisionByZeroError):
        await db.migrate(src)
    applied = await db.fetch("SELECT name FROM schema_migrations ORDER BY version")
    assert [r["name"] for r in applied] == ["0001_table", "0002_col"]
    assert "partial" not in await tables(db)  # its transaction rolled back

    (src / "0003_bad.sql").write_text("CREATE TABLE partial (x int);")
    assert await db.migrate(src) == ["0003_bad", "0010_fill"]
    assert await db.fetchval("SELECT b FROM t") == 2


async def test_bad_migration_sets_refused(make_db: MakeDb, tmp_path: Path) -> None:
    dup = write_migrations(tmp_path / "dup", {"0002_x.sql": "SELECT 1;", "2_y.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="share version 2"):
        load_migrations(dup)
    badname = write_migrations(tmp_path / "bad", {"0001-core.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="NNNN_name"):
        load_migrations(badname)

    # A version applied under one name and now carrying another: two branches
    # picked the same number. Refuse instead of skipping the new one.
    db = await make_db(migrated=False)
    await db.migrate(write_migrations(tmp_path / "v1", {"0001_a.sql": "SELECT 1;"}))
    with pytest.raises(MigrationError, match="renumber"):
        await db.migrate(write_migrations(tmp_path / "v2", {"0001_b.sql": "SELECT 1;"}))


async def test_db_fixture_migrated_isolated_and_json(db: Database, make_db: MakeDb) -> None:
    assert set(CORE_TABLES) <= await tables(db)
    inventory = {"cores": 8, "gpus": [{"index": 0, "name": "H100"}]}
    await db.execute("INSERT INTO nodes (id, inventory) VALUES ($1, $2)", "n1", inventory)
    assert await db.fetchval("SELECT inventory FROM nodes WHERE id = 'n1'") == inventory
    assert await db.fetchval("SELECT state FROM nodes") == "ready"

    await db.execute("INSERT INTO tokens (id, name, hash, scope) VALUES ('t1', 'ci', 'h1', 'read')")
    with pytest.raises(asyncpg.UniqueViolationError):  # query errors pass through, unretried
        await db.execute("INSERT INTO tokens (id, name, hash, scope) VALUES ('t2', 'ci2', 'h1', 'read')")

    async with db.transaction() as con:
        await con.execute("INSERT INTO apps (id, name) VALUES ('a1', 'embedder')")
    with pytest.raises(RuntimeError):
        async with db.transaction() as con:
            await con.execute("INSERT INTO apps (id, name) VALUES ('a2', 'other')")
            raise RuntimeError("roll back")
    assert await db.fetchval("SELECT count(*) FROM apps") == 1

    other = await make_db()
    assert await other.fetchval("SELECT count(*) FROM nodes") == 0
    assert await other.migrate() == []  # the template was migrated


# ---------------------------------------------------------------- restarts


@pytest.fixture(scope="module")
def scratch_cluster(pg_cluster_factory: ClusterFactory) -> PgCluster:
    return pg_cluster_factory()


@pytest.fixture
def scratch(scratch_cluster: PgCluster) -> Iterator[PgCluster]:
    """This module's own cluster, started; the tests stop, kill and restart
    it, and leave it as they like: the next test gets it started again."""
    scratch_cluster.start()
    yield scratch_cluster
    scratch_cluster.stop()


async def warm(db: Database, n: int) -> None:
    # Hold n connections at once, so the pool really has n open.
    await asyncio.gather(*(db.fetchval("SELECT pg_sleep(0.05)") for _ in range(n)))


async def test_survives_restart(scratch: PgCluster, caplog: pytest.LogCaptureFixture) -> None:
    db = await Database.connect(scratch.dsn, min_size=3, max_size=3)
    try:
        await warm(db, 3)
        # Blocking the event loop on purpose: like a service busy elsewhere,
        # the pool gets no chance to notice its connections died, so the
        # query finds a dead connection and must retry.
        scratch.stop()
        scratch.start()
        with caplog.at_level(logging.WARNING, logger="thaw_core.db"):
            assert await db.fetchval("SELECT 41 + 1") == 42
        assert "connection lost" in caplog.text
        # Every connection of the pool was replaced, not just the one used.
        assert await asyncio.gather(*(db.fetchval("SELECT 1") for _ in range(6))) == [1] * 6
        await db.ping()
    finally:
        await db.close()


async def test_survives_crash(scratch: PgCluster) -> None:
    db = await Database.connect(scratch.dsn, min_size=2)
    try:
        await warm(db, 2)
        scratch.kill()
        assert not scratch.is_running()
        scratch.start()  # crash recovery
        assert await db.fetchval("SELECT 7") == 7
        await db.execute("SELECT 1")
        assert await db.fetchrow("SELECT 1 AS one") is not None
        assert await db.fetch("SELECT 1") != []
    finally:
        await db.close()


async def test_query_waits_for_postgres_to_return(scratch: PgCluster) -> None:
    db = await Database.connect(scratch.dsn, reconnect_timeout_s=15)
    try:
        await asyncio.to_thread(scratch.stop)
        t0 = time.monotonic()
        query = asyncio.create_task(db.fetchval("SELECT 'back'"))
        await asyncio.sleep(0.3)
        assert not query.done()
        await asyncio.to_thread(scratch.start)
        assert await asyncio.wait_for(query, 15) == "back"
        assert time.monotonic() - t0 >= 0.3
    finally:
        await db.close()


async def test_gives_up_when_postgres_stays_down(scratch: PgCluster) -> None:
    db = await Database.connect(scratch.dsn, reconnect_timeout_s=0.3)
    try:
        await asyncio.to_thread(scratch.stop)
        with pytest.raises((OSError, asyncpg.PostgresError)):
            await db.fetchval("SELECT 1")
    finally:
        await db.close()


async def test_connect_waits_then_times_out(scratch: PgCluster) -> None:
    await asyncio.to_thread(scratch.stop)
    connecting = asyncio.create_task(Database.connect(scratch.dsn, connect_timeout_s=15))
    await asyncio.sleep(0.3)
    assert not connecting.done()
    await asyncio.to_thread(scratch.start)
    db = await asyncio.wait_for(connecting, 15)
    assert await db.fetchval("SELECT current_database()") == "thaw"
    await db.close()

    await asyncio.to_thread(scratch.stop)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        await Database.connect(scratch.dsn, connect_timeout_s=0.5)
    assert time.monotonic() - t0 < 5


# ---------------------------------------------------------------- PgCluster


async def test_cluster_idempotent_lifecycle(scratch: PgCluster) -> None:
    scratch.init()
    scratch.start()  # already running: no-op
    assert scratch.is_running()
    assert scratch.dsn == f"postgresql://thaw:{scratch.password}@127.0.0.1:{scratch.port}/thaw"
    scratch.stop()
    scratch.stop()
    assert not scratch.is_running()
    scratch.kill()  # nothing to kill: no-op
    scratch.start()
    db = await Database.connect(scratch.dsn)
    # Only loopback: the server must not listen on other interfaces.
    assert await db.fetchval("SHOW listen_addresses") == "127.0.0.1"
    await db.close()


async def test_foreground_postmaster_for_a_supervisor(scratch: PgCluster) -> None:
    await asyncio.to_thread(scratch.stop)
    # As the embedded stack's supervisor runs it: a child process of ours.
    proc = await asyncio.create_subprocess_exec(
        *scratch.popen_args(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        **scratch.popen_kwargs(),
    )
    try:
        db = await Database.connect(scratch.dsn, connect_timeout_s=15)
        assert await db.fetchval("SELECT current_user") == "thaw"
        assert scratch.is_running()
        # A service still connected must not hold the shutdown up.
        proc.send_signal(PgCluster.STOP_SIGNAL)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        await db.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert not scratch.is_running()
