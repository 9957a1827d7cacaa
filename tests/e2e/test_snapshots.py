"""Memory snapshots end to end, as a user sees them: `thaw deploy` a class
with ``enable_memory_snapshot=True``, call it, and watch later containers
start from the snapshot (the container list says ``restored``, the catalog
counts restores), keep what ``enter(snap=True)`` built, run
``enter(snap=False)`` again and draw fresh random numbers. A corrupted
snapshot and a node of another kind both start cold, and calls still succeed.

Gateway, scheduler, snapshots service and agents run as real processes on
a platform of this module's own (the tests add and stop agents).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import thaw as modal
from fixtures.metrics import metrics_url, scrape, value
from fixtures.platform import Platform
from thaw_core.blob import open_blob_store
from thaw_core.fingerprint import fingerprint_id, local_fingerprint
from thaw_core.schema import CpuFingerprint, Fingerprint

APPS = Path(__file__).parent / "apps"
APP = "snap-counter"

pytestmark = pytest.mark.slow


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, platform: Platform) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{platform.logs()}")
        time.sleep(0.2)


def stop_agent(platform: Platform, node_id: str) -> None:
    # Out of the fixture's list too: it takes a dead process for a failed start.
    platform.procs.pop(f"agent@{node_id}").stop()


def snapshots(platform: Platform) -> list[dict[str, Any]]:
    async def rows() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(platform.base_env["THAW_DATABASE_URL"])
        try:
            found = await conn.fetch(
                "SELECT snapshot_id, fingerprint_id, state, restores, failures, blob_key"
                " FROM snapshots WHERE app = $1 ORDER BY created_at",
                APP,
            )
        finally:
            await conn.close()
        return [dict(r) for r in found]

    return asyncio.run(rows())


def containers(platform: Platform, node_id: str = "") -> list[dict[str, Any]]:
    body = platform.api(f"/v1/containers?app={APP}")
    return [
        c
        for c in body["containers"]
        if c["state"] in ("starting", "ready") and node_id in ("", c["node_id"])
    ]


def listed(platform: Platform, container_id: str) -> dict[str, Any]:
    """The container as the API lists it (the list follows the agents'
    heartbeats, a second or two behind)."""

    def find() -> dict[str, Any] | None:
        return next((c for c in containers(platform) if c["container_id"] == container_id), None)

    return wait_for(find, 30, f"{container_id} in the container list", platform)


def stop_container(platform: Platform, container_id: str) -> None:
    """Stop it through the API, once the container list shows it (the list
    follows the agents' heartbeats, a second or two behind)."""

    def listed() -> bool:
        return any(c["container_id"] == container_id for c in containers(platform))

    wait_for(listed, 30, f"{container_id} in the container list", platform)
    platform.api(f"/v1/containers/{container_id}/stop", method="POST")
    wait_for(lambda: not listed(), 30, f"{container_id} to stop", platform)


@pytest.fixture(scope="module")
async def snap_platform(platform_factory: Callable[..., Any]) -> Platform:
    p: Platform = await platform_factory(("snap-a",))
    p.ensure_service("snapshots")
    env = {**os.environ, "THAW_GATEWAY_URL": p.gateway_url, "THAW_TOKEN": p.token}
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "thaw.cli", "deploy", str(APPS / "snap_counter.py")],
        env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return p


@pytest.fixture
def snapped(snap_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("THAW_GATEWAY_URL", snap_platform.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", snap_platform.token)
    return modal.Cls.from_name(APP, "Snapped")()


def test_second_container_is_restored_with_snapshot_state(
    snap_platform: Platform, snapped: Any
) -> None:
    p = snap_platform
    first = snapped.state.remote()
    assert first["table"] == 300_000
    made = wait_for(
        lambda: [s for s in snapshots(p) if s["state"] == "ready"], 60, "a ready snapshot", p
    )
    assert len(made) == 1 and made[0]["fingerprint_id"] == fingerprint_id(local_fingerprint())

    # Stop it, and any container the scheduler added while it was being
    # snapshotted (those started cold: the snapshot was not ready yet).
    listed(p, first["container"])
    for c in containers(p):
        stop_container(p, c["container_id"])
    second = snapped.state.remote()
    assert second["container"] != first["container"]
    running = wait_for(
        lambda: (c := listed(p, second["container"]))["state"] == "ready" and c,
        30,
        "the restored container listed as ready",
        p,
    )
    assert running["node_id"] == "snap-a" and running["restored"]
    # What snap=True built is there, from the very process the snapshot caught.
    assert second["table"] == 300_000
    assert (second["snap_pid"], second["snap_draw"]) == (first["snap_pid"], first["snap_draw"])
    # snap=False ran after this restore (once: the counter was 0 in the snapshot).
    assert second["restores"] == 1
    # Both containers were restored (the first right after it was snapshotted),
    # and each was reseeded: their draws after restore differ.
    assert second["draw"] != first["draw"]
    assert wait_for(
        lambda: [s for s in snapshots(p) if s["restores"] >= 1], 30, "the restore counted", p
    )


def test_metrics_count_the_restore_and_the_snapshot_cache(snap_platform: Platform) -> None:
    """After the restore above: the agent's metrics say a restore happened,
    how long it took, and that it looked the snapshot up in its cache."""
    url = asyncio.run(metrics_url(snap_platform.base_env["THAW_NATS_URL"], "agent"))
    samples = scrape(url)
    assert value(samples, "thaw_container_starts_total", kind="restore", outcome="ok") >= 1
    assert value(samples, "thaw_container_start_seconds_count", kind="restore") >= 1
    assert value(samples, "thaw_container_starts_total", kind="cold", outcome="ok") >= 1
    lookups = [
        value(samples, "thaw_cache_lookups_total", cache="snapshot", result=r)
        for r in ("hit", "miss")
    ]
    assert sum(lookups) >= 1, lookups


def test_incompatible_node_starts_cold(
    snap_platform: Platform, snapped: Any, tmp_path: Path
) -> None:
    p = snap_platform
    before = {s["snapshot_id"]: s["restores"] for s in snapshots(p)}
    other = Fingerprint(
        cpu=CpuFingerprint(arch="aarch64", vendor="ARM", model="Neoverse-V2", flags=["fp"]),
        criu=local_fingerprint().criu,
        kernel=local_fingerprint().kernel,
    )
    recorded = tmp_path / "arm.json"
    recorded.write_bytes(msgspec.json.encode(other))
    for c in containers(p):
        stop_container(p, c["container_id"])
    p.add_agent("snap-arm", THAW_TEST_FINGERPRINT_FILE=str(recorded))
    stop_agent(p, "snap-a")

    state = snapped.state.remote()
    assert state["table"] == 300_000 and state["restores"] == 1
    # Nothing of the x86 snapshot was restored there: its count did not move,
    # and the ARM node's class gets a snapshot of its own.
    after = {s["snapshot_id"]: s for s in snapshots(p)}
    assert all(after[sid]["restores"] == n for sid, n in before.items())
    assert any(s["fingerprint_id"] == fingerprint_id(other) for s in after.values())
    stop_container(p, state["container"])
    stop_agent(p, "snap-arm")


def test_corrupted_snapshot_starts_cold(snap_platform: Platform, snapped: Any) -> None:
    p = snap_platform
    ours = [
        s
        for s in snapshots(p)
        if s["fingerprint_id"] == fingerprint_id(local_fingerprint()) and s["state"] == "ready"
    ]
    assert ours, snapshots(p)
    failures_before = ours[0]["failures"]

    async def corrupt() -> None:
        store = open_blob_store(p.base_env["THAW_BLOB_URL"])
        try:
            await store.put(ours[0]["blob_key"], b"this is not a snapshot")
        finally:
            await store.close()

    asyncio.run(corrupt())
    p.add_agent("snap-fresh")  # no local copy: it fetches the corrupted blob

    state = snapped.state.remote()
    assert state["table"] == 300_000 and state["restores"] == 1
    running = wait_for(
        lambda: (c := listed(p, state["container"]))["state"] == "ready" and c,
        30,
        "the cold container listed as ready",
        p,
    )
    assert running["node_id"] == "snap-fresh" and not running["restored"]
    assert wait_for(
        lambda: [
            s
            for s in snapshots(p)
            if s["snapshot_id"] == ours[0]["snapshot_id"] and s["failures"] > failures_before
        ],
        30,
        "the failed restore counted",
        p,
    )


def test_redeploying_changed_code_obsoletes_the_snapshot_and_makes_a_new_one(
    snap_platform: Platform, snapped: Any, tmp_path: Path
) -> None:
    """Last in this module: it replaces the deployed version."""
    p = snap_platform

    def by_version() -> dict[int, list[str]]:
        async def rows() -> dict[int, list[str]]:
            conn = await asyncpg.connect(p.base_env["THAW_DATABASE_URL"])
            try:
                found = await conn.fetch("SELECT version, state FROM snapshots WHERE app = $1", APP)
            finally:
                await conn.close()
            out: dict[int, list[str]] = {}
            for r in found:
                out.setdefault(r["version"], []).append(r["state"])
            return out

        return asyncio.run(rows())

    snapped.state.remote()
    old = wait_for(
        lambda: {v for v, states in by_version().items() if "ready" in states},
        60,
        "a ready snapshot of the deployed version",
        p,
    )
    changed = tmp_path / "snap_counter.py"
    changed.write_text(
        (APPS / "snap_counter.py").read_text()
        + '\n    @modal.method()\n    def edition(self):\n        return "second"\n'
    )
    env = {**os.environ, "THAW_GATEWAY_URL": p.gateway_url, "THAW_TOKEN": p.token}
    out = subprocess.run(
        [sys.executable, "-m", "thaw.cli", "deploy", str(changed)],
        check=False, env=env, capture_output=True, text=True, timeout=180,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr

    assert modal.Cls.from_name(APP, "Snapped")().edition.remote() == "second"
    # The old version's snapshots go (obsolete, then deleted by GC) and the
    # new version gets one of its own.
    wait_for(
        lambda: all(set(by_version().get(v, [])) <= {"obsolete"} for v in old),
        60,
        "the old version's snapshots to become obsolete",
        p,
    )
    wait_for(
        lambda: any(v > max(old) and "ready" in s for v, s in by_version().items()),
        90,
        "a ready snapshot of the new version",
        p,
    )
