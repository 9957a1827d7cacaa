"""Memory snapshots end to end, as a user sees them: `thaw deploy` a class
with ``enable_memory_snapshot=True``, call it, and watch later containers
start from the snapshot (the container list says ``restored``, the catalog
counts restores), keep what ``enter(snap=True)`` built, run
``enter(snap=False)`` again and draw fresh random numbers. A corrupted
snapshot and a node of another kind both start cold, and calls still succeed.
A snapshot whose restores are no faster than a cold start is not used, and
`thaw snapshot list` says why.

Gateway, scheduler, snapshots service and agents run as real processes on
a platform of this module's own (the tests add and stop agents).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import thaw as modal
from fixtures.metrics import metrics_url, scrape, value
from fixtures.platform import Platform
from fixtures.wait import wait_for
from thaw_core.blob import open_blob_store
from thaw_core.fingerprint import fingerprint_id, local_fingerprint
from thaw_core.schema import CpuFingerprint, Fingerprint
from thaw_snapshots.catalog import Policy

APPS = Path(__file__).parent / "apps"
APP = "snap-counter"

pytestmark = pytest.mark.slow


def stop_agent(platform: Platform, node_id: str) -> None:
    # Out of the fixture's list too: it takes a dead process for a failed start.
    platform.procs.pop(f"agent@{node_id}").stop()


def snapshots(platform: Platform) -> list[dict[str, Any]]:
    async def rows() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(platform.base_env["THAW_DATABASE_URL"])
        try:
            found = await conn.fetch(
                "SELECT snapshot_id, fingerprint_id, state, restores, failures, blob_key,"
                " cold_start_s FROM snapshots WHERE app = $1 ORDER BY created_at",
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
    """The container once the API lists it ready: the list follows the
    agents' heartbeats, and one sent while it was being restored lists it
    starting, not yet ``restored``."""

    def find() -> dict[str, Any] | None:
        return next(
            (c for c in containers(platform)
             if c["container_id"] == container_id and c["state"] == "ready"),
            None,
        )  # fmt: skip

    return wait_for(find, 30, f"{container_id} listed ready", platform)


def stop_container(platform: Platform, container_id: str) -> None:
    """Stop it through the API, once the container list shows it (the list
    follows the agents' heartbeats, a second or two behind)."""

    def listed() -> bool:
        return any(c["container_id"] == container_id for c in containers(platform))

    wait_for(listed, 30, f"{container_id} in the container list", platform)
    platform.api(f"/v1/containers/{container_id}/stop", method="POST")
    wait_for(lambda: not listed(), 30, f"{container_id} to stop", platform)


@pytest.fixture(scope="module")
async def snap_deployed(platform_factory: Callable[..., Any]) -> tuple[Platform, str]:
    """The platform, and what `thaw deploy` of the snapshot-enabled app printed."""
    p: Platform = await platform_factory(("snap-a",))
    p.ensure_service("snapshots")
    out = await asyncio.to_thread(p.cli, "deploy", str(APPS / "snap_counter.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    return p, out.stdout


@pytest.fixture(scope="module")
def snap_platform(snap_deployed: tuple[Platform, str]) -> Platform:
    return snap_deployed[0]


@pytest.fixture
def snapped(snap_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("THAW_GATEWAY_URL", snap_platform.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", snap_platform.token)
    return modal.Cls.from_name(APP, "Snapped")()


def test_the_first_call_after_deploy_is_a_restore(
    snap_deployed: tuple[Platform, str], snapped: Any
) -> None:
    """No call yet: the deploy alone made the snapshot (a container that took
    no input and stopped), so the very first call restores. `thaw deploy`
    showed it being taken."""
    p, deploy_output = snap_deployed
    assert "taking a memory snapshot of Snapped" in deploy_output
    assert "memory snapshot of Snapped ready in" in deploy_output, deploy_output
    made = wait_for(
        lambda: [s for s in snapshots(p) if s["state"] == "ready"],
        180,
        "a snapshot made at deploy, before any call",
        p,
    )
    assert len(made) == 1 and made[0]["fingerprint_id"] == fingerprint_id(local_fingerprint())
    # Its maker measured the cold start its restores are weighed against.
    assert made[0]["cold_start_s"] > 0
    wait_for(lambda: not containers(p), 60, "the snapshot's container to stop", p)
    listing = p.cli("snapshot", "list", "--app", APP)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert made[0]["snapshot_id"] in listing.stdout
    assert f"{APP}/Snapped version 1: snapshots cover 1 of 1 fingerprint" in listing.stderr

    first = snapped.state.remote()
    running = listed(p, first["container"])
    assert running["node_id"] == "snap-a" and running["restored"]
    assert first["table"] == 300_000 and first["restores"] == 1
    assert wait_for(
        lambda: [s for s in snapshots(p) if s["restores"] >= 1], 30, "the restore counted", p
    )


def test_second_container_is_restored_with_snapshot_state(
    snap_platform: Platform, snapped: Any
) -> None:
    p = snap_platform
    first = snapped.state.remote()
    listed(p, first["container"])
    for c in containers(p):
        stop_container(p, c["container_id"])
    second = snapped.state.remote()
    assert second["container"] != first["container"]
    running = listed(p, second["container"])
    assert running["node_id"] == "snap-a" and running["restored"]
    # What snap=True built is there, from the very process the snapshot caught.
    assert second["table"] == 300_000
    assert (second["snap_pid"], second["snap_draw"]) == (first["snap_pid"], first["snap_draw"])
    # snap=False ran after this restore (once: the counter was 0 in the snapshot).
    assert second["restores"] == 1
    # Both containers were restored from one snapshot, and each was
    # reseeded: their draws after restore differ.
    assert second["draw"] != first["draw"]
    assert len([s for s in snapshots(p) if s["state"] == "ready"]) == 1


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
    running = listed(p, state["container"])
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
    """It replaces the deployed version (the next test uses the new one's snapshot)."""
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
    p.deploy(changed)

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


def test_a_snapshot_no_faster_than_a_cold_start_is_not_used(
    snap_platform: Platform, snapped: Any
) -> None:
    """Last in this module. As if this function's cold start took 1 ms and
    two restores had already been slower: the next restore is the third in
    a row (``Policy.unhelpful_after``), the snapshot turns "unhelpful", the
    next container starts cold and `thaw snapshot list` says why."""
    p = snap_platform
    ready = [s for s in snapshots(p) if s["state"] == "ready"]
    assert len(ready) == 1, snapshots(p)
    sid = ready[0]["snapshot_id"]

    async def judged_twice() -> None:
        conn = await asyncpg.connect(p.base_env["THAW_DATABASE_URL"])
        try:
            await conn.execute(
                "UPDATE snapshots SET cold_start_s = 0.001, slow_streak = $2"
                " WHERE snapshot_id = $1",
                sid,
                Policy().unhelpful_after - 1,
            )
        finally:
            await conn.close()

    asyncio.run(judged_twice())
    for c in containers(p):
        stop_container(p, c["container_id"])
    restored = snapped.state.remote()
    assert listed(p, restored["container"])["restored"]
    wait_for(
        lambda: [s for s in snapshots(p) if s["snapshot_id"] == sid and s["state"] == "unhelpful"],
        30,
        "the snapshot judged unhelpful",
        p,
    )
    stop_container(p, restored["container"])

    cold = snapped.state.remote()
    assert cold["table"] == 300_000 and cold["snap_draw"] != restored["snap_draw"]  # init ran again
    assert not listed(p, cold["container"])["restored"]
    listing = p.cli("snapshot", "list", "--app", APP)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "unhelpful" in listing.stdout
    assert f"snapshot {sid} is not used: its restores (" in listing.stderr
    assert "1 start cold (a snapshot does not help there)" in listing.stderr
