"""Secrets end to end, as a user sees them: `thaw secret create/list/delete`,
functions that get them as environment variables, deploys refused for a
missing secret or key, a restored container that sees a secret updated after
its snapshot, and a planted value found nowhere it must not be.

Gateway, scheduler, builder, snapshots service and an agent run as real
processes on a platform of this module's own.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import thaw as modal
from fixtures.platform import Platform
from fixtures.private_files import exposed, others_may_enter
from fixtures.wait import wait_for

APPS = Path(__file__).parent / "apps"
APP = "secrets-e2e"
# Unique to this run: found anywhere it must not be, it leaked.
PLANTED = "planted-" + uuid.uuid4().hex
PLANTED_LOCAL = "planted-local-" + uuid.uuid4().hex

pytestmark = pytest.mark.slow


def thaw(p: Platform, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "THAW_GATEWAY_URL": p.gateway_url, "THAW_TOKEN": p.token, **env}
    return subprocess.run(
        [sys.executable, "-m", "thaw.cli", *args], env=full, capture_output=True, text=True,
        timeout=300, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def api(p: Platform, path: str, method: str = "GET") -> bytes:
    req = urllib.request.Request(
        p.gateway_url + path, method=method, headers={"Authorization": f"Bearer {p.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def sql(p: Platform, query: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(p.base_env["THAW_DATABASE_URL"])
        try:
            return [dict(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def live_containers(p: Platform) -> list[dict[str, Any]]:
    return p.live_containers(APP)


@pytest.fixture(scope="module")
async def secrets_platform(platform_factory: Callable[..., Any]) -> Platform:
    p: Platform = await platform_factory(("secrets-a",))
    p.ensure_service("snapshots")
    out = await asyncio.to_thread(
        thaw, p, "secret", "create", "e2e-creds", f"API_KEY={PLANTED}", "ORDER=first"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    out = await asyncio.to_thread(
        thaw, p, "deploy", str(APPS / "secrets_app.py"), E2E_LOCAL=PLANTED_LOCAL
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return p


@pytest.fixture
def use(secrets_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    monkeypatch.setenv("THAW_GATEWAY_URL", secrets_platform.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", secrets_platform.token)
    return secrets_platform


def test_create_list_delete_with_the_cli(use: Platform) -> None:
    p = use
    dotenv = p.root / "e2e.env"
    dotenv.write_text("FROM_FILE=f1\nexport SHARED=file\n")
    out = thaw(p, "secret", "create", "cli-made", "SHARED=arg", "--from-dotenv", str(dotenv))
    assert out.returncode == 0, out.stderr
    listed = thaw(p, "secret", "list")
    row = next(line for line in listed.stdout.splitlines() if line.startswith("cli-made"))
    assert "FROM_FILE" in row and "SHARED" in row
    assert "f1" not in listed.stdout and PLANTED not in listed.stdout

    again = thaw(p, "secret", "create", "cli-made", "SHARED=x")
    assert again.returncode == 1 and "--force" in again.stderr
    forced = thaw(p, "secret", "create", "cli-made", "ONLY=1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "ONLY" in thaw(p, "secret", "list").stdout

    assert thaw(p, "secret", "delete", "cli-made").returncode == 0
    assert "cli-made" not in thaw(p, "secret", "list").stdout
    gone = thaw(p, "secret", "delete", "cli-made")
    assert gone.returncode == 1 and "cli-made" in gone.stderr


def test_functions_get_their_secrets_later_ones_winning(use: Platform) -> None:
    env_of = modal.Function.from_name(APP, "env_of")
    got = env_of.remote(["API_KEY", "E2E_LOCAL", "ORDER"])
    assert got == {"API_KEY": PLANTED, "E2E_LOCAL": PLANTED_LOCAL, "ORDER": "last-wins"}


def test_a_missing_secret_or_key_fails_the_deploy(use: Platform) -> None:
    p = use
    absent = "absent-" + uuid.uuid4().hex[:8]
    out = thaw(p, "deploy", str(APPS / "secrets_missing.py"), E2E_MISSING=absent)
    assert out.returncode != 0 and absent in out.stderr and "does not exist" in out.stderr
    assert thaw(p, "secret", "create", absent, "OTHER=1").returncode == 0
    out = thaw(p, "deploy", str(APPS / "secrets_missing.py"), E2E_MISSING=absent)
    assert out.returncode != 0 and "NEEDED" in out.stderr


def test_a_restored_container_sees_the_secret_as_it_is_now(use: Platform) -> None:
    p = use
    snapped = modal.Cls.from_name(APP, "Snapped")()
    first = snapped.key.remote()
    # The snapshot is taken before any secret is handed over.
    assert first["key"] == PLANTED and first["at_snapshot"] is None
    wait_for(
        lambda: sql(p, "SELECT 1 FROM snapshots WHERE app = $1 AND state = 'ready'", APP),
        120,
        "a ready snapshot",
        p,
    )
    new = "rotated-" + uuid.uuid4().hex
    out = thaw(p, "secret", "create", "e2e-creds", f"API_KEY={new}", "--force")
    assert out.returncode == 0, out.stderr
    p.stop_containers(APP)

    second = snapped.key.remote()
    assert second["container"] != first["container"]
    # Listed ready: a heartbeat sent while it was being restored lists it
    # starting, not yet ``restored``.
    restored = wait_for(
        lambda: next(
            (
                c
                for c in live_containers(p)
                if c["container_id"] == second["container"] and c["state"] == "ready"
            ),
            None,
        ),
        30,
        "the new container listed ready",
        p,
    )
    assert restored["restored"], restored
    assert second["key"] == new
    # Put the planted value back for the leak test.
    thaw(p, "secret", "create", "e2e-creds", f"API_KEY={PLANTED}", "ORDER=first", "--force")


def _files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


def test_a_planted_value_is_found_nowhere(use: Platform) -> None:
    p = use
    modal.Function.from_name(APP, "env_of").remote(["API_KEY"])  # a container has used it
    answers = [
        api(p, f"/v1/functions/{APP}/env_of"),
        api(p, f"/v1/functions/{APP}/Snapped"),
        api(p, "/v1/apps"),
        api(p, "/v1/secrets"),
        api(p, f"/v1/containers?app={APP}"),
        api(p, f"/v1/apps/{APP}/logs"),
    ]
    for planted in (PLANTED, PLANTED_LOCAL):
        needle = planted.encode()
        assert not [a for a in answers if needle in a]
        # Every state dir and log of the platform: config.json, bundles, key files...
        assert _files_holding(p.root, needle) == []
        rows = sql(p, "SELECT spec::text AS spec FROM functions WHERE app = $1", APP)
        assert rows and not [r for r in rows if planted in r["spec"]]
        sealed = sql(p, "SELECT name, nonce, value FROM secrets")
        assert sealed and not [r for r in sealed if needle in bytes(r["value"])]


def test_no_credential_is_readable_by_other_users(use: Platform) -> None:
    """Every service's state dir is closed to other users, and no file that
    holds a credential (the admin token, the secrets key, a secret's value,
    a container's runc config.json) is readable by group or others."""
    p = use
    modal.Function.from_name(APP, "env_of").remote(["API_KEY"])  # a container is up
    key_files = list(p.root.rglob("secrets.key"))
    configs = [c for c in p.root.rglob("config.json") if c.parent.name == "oci"]
    assert key_files and configs, (key_files, configs)
    for c in [*key_files, *configs]:
        assert stat.S_IMODE(c.stat().st_mode) == 0o600, c
    for name in p.procs:
        state = p.root / name.replace("@", "-")
        assert not others_may_enter(state), (state, oct(state.stat().st_mode))
    known = [p.token, PLANTED, PLANTED_LOCAL, *(k.read_text().strip() for k in key_files)]
    assert exposed(p.root, known) == []
