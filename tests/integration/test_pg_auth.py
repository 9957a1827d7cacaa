"""The embedded Postgres trusts nobody on the machine: every local and host
line of pg_hba.conf asks for a SCRAM password, the password lives in a 0600
file, and a local user without it (``nobody``, or a client that simply does
not send one) is refused."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fixtures.postgres import ClusterFactory
from thaw.stack.pgcluster import PgCluster


def _hba_methods(cluster: PgCluster) -> list[str]:
    lines = (cluster.data_dir / "pg_hba.conf").read_text().splitlines()
    return [ln.split()[-1] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


async def _refused(cluster: PgCluster, password: str | None) -> BaseException:
    with pytest.raises(
        (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError)
    ) as err:
        await asyncpg.connect(
            host="127.0.0.1",
            port=cluster.port,
            user=cluster.user,
            database=cluster.database,
            password=password,
            passfile="/nonexistent",
            timeout=10,
        )
    return err.value


async def test_no_trust_and_the_password_is_private(
    postgres: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    methods = _hba_methods(postgres)
    assert methods and set(methods) == {"scram-sha-256"}, methods
    mode = stat.S_IMODE(postgres.password_file.stat().st_mode)
    assert mode == 0o600, oct(mode)
    assert postgres.password and len(postgres.password) >= 32
    # No password, or a wrong one: refused. The right one (in dsn): accepted.
    await _refused(postgres, None)
    await _refused(postgres, "not-the-password")
    con = await asyncpg.connect(postgres.dsn, timeout=10)
    try:
        assert await con.fetchval("SHOW password_encryption") == "scram-sha-256"
        # Stored as a SCRAM verifier, never as the plaintext.
        stored = await con.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", postgres.user
        )
        assert stored.startswith("SCRAM-SHA-256$") and postgres.password not in stored
    finally:
        await con.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another local user needs root")
def test_another_local_user_is_refused(postgres: PgCluster) -> None:
    nobody = pwd.getpwnam("nobody")
    as_nobody: dict[str, Any] = {
        "user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": [], "cwd": "/",
        "env": {"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        "capture_output": True, "text": True,
    }  # fmt: skip
    psql = [
        str(postgres.bindir / "psql"), "-X", "-w", "-h", "127.0.0.1", "-p", str(postgres.port),
        "-U", postgres.user, "-d", postgres.database, "-c", "SELECT 1",
    ]  # fmt: skip
    res = subprocess.run(psql, check=False, **as_nobody)
    assert res.returncode != 0
    assert "password" in res.stderr, res.stderr
    # Nor can that user read the password from its file.
    res = subprocess.run(["cat", str(postgres.password_file)], check=False, **as_nobody)
    assert res.returncode != 0 and "Permission denied" in res.stderr, res


async def test_a_cluster_without_a_password_gets_one(
    pg_cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    """A cluster made before passwords (no password file): init() sets one,
    and the old one no longer works."""
    made = pg_cluster_factory()
    old = made.password
    assert old
    upgraded = PgCluster(
        made.data_dir, made.port, ephemeral=True, password_file=tmp_path / "postgres-password"
    )
    upgraded.init()
    assert upgraded.password and upgraded.password != old
    upgraded.start()
    try:
        con = await asyncpg.connect(upgraded.dsn, timeout=10)
        await con.close()
        await _refused(upgraded, old)
    finally:
        upgraded.stop()
