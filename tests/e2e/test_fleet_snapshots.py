"""A memory snapshot made on one node is restored on another node of the same
fingerprint class, fetched from the blob store over that node's network (a
new node has an empty snapshot cache), and never on a node whose recorded
fingerprint is of another class (ARM, simulated as tests/e2e/test_snapshots.py
does): there the function starts cold and its class gets a snapshot of its own.
Every node is in a network namespace of its own (fixtures.fleet)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import thaw as modal
from fixtures.fleet import Fleet, start_fleet
from fixtures.platform import E2E_APPS, Platform
from fixtures.wait import eventually
from thaw_core.fingerprint import TEST_FINGERPRINT_ENV, fingerprint_id, local_fingerprint
from thaw_core.schema import CpuFingerprint, Fingerprint

pytestmark = pytest.mark.slow

APP = "snap-counter"


async def _snapshots(p: Platform) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(p.base_env["THAW_DATABASE_URL"])
    try:
        rows = await conn.fetch(
            "SELECT fingerprint_id, state, restores FROM snapshots WHERE app = $1", APP
        )
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def _running(p: Platform) -> list[dict[str, Any]]:
    return p.live_containers(APP)


async def _move_to(fleet: Fleet, gone: str, new: str, **env: str) -> None:
    """Stop the app's containers, lose node ``gone``, add node ``new``."""
    p = fleet.platform
    await asyncio.to_thread(p.stop_containers, APP)
    fleet.lose(gone)
    await asyncio.to_thread(fleet.add_node, new, **env)


async def _listed(p: Platform, container_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next(
            (c for c in _running(p) if c["container_id"] == container_id and c["state"] == "ready"),
            None,
        )

    return await eventually(lambda: asyncio.to_thread(find), 30, f"{container_id} listed ready")


async def test_a_snapshot_moves_to_a_node_of_its_class_only(pg_dsn, tmp_path: Path, monkeypatch):
    async with start_fleet(pg_dsn, tmp_path, nodes=("node-a",)) as fleet:
        p = fleet.platform
        await asyncio.to_thread(p.ensure_service, "snapshots")
        monkeypatch.setenv("THAW_GATEWAY_URL", p.gateway_url)
        monkeypatch.setenv("THAW_TOKEN", p.token)
        await asyncio.to_thread(p.deploy, E2E_APPS / "snap_counter.py")
        snapped = modal.Cls.from_name(APP, "Snapped")()

        # The deploy alone makes the snapshot; the first call restores it.
        made = await eventually(
            lambda: _ready(p), 180, "a ready snapshot made on node-a at deploy", every_s=0.5
        )
        assert [s["fingerprint_id"] for s in made] == [fingerprint_id(local_fingerprint())]
        first = await asyncio.to_thread(snapped.state.remote)

        here = fingerprint_id(local_fingerprint())
        # node-a is lost; node-b, of the same class, has no local copy.
        await _move_to(fleet, "node-a", "node-b")
        before_b = await _restores(p, here)
        second = await asyncio.to_thread(snapped.state.remote)
        on_b = await _listed(p, second["container"])
        assert on_b["node_id"] == "node-b" and on_b["restored"], on_b
        assert (second["snap_pid"], second["snap_draw"]) == (first["snap_pid"], first["snap_draw"])
        # node-b's restore is counted on the node-a snapshot (the event may lag the call).
        counted = await eventually(
            lambda: _more_restores(p, here, before_b), 30, "node-b's restore counted", every_s=0.5
        )

        # node-b is lost; node-x records an ARM fingerprint: it starts cold.
        arm = Fingerprint(
            cpu=CpuFingerprint(arch="aarch64", vendor="ARM", model="Neoverse-V2", flags=["fp"]),
            criu=local_fingerprint().criu,
            kernel=local_fingerprint().kernel,
        )
        recorded = tmp_path / "arm.json"
        recorded.write_bytes(msgspec.json.encode(arm))
        await _move_to(fleet, "node-b", "node-x", **{TEST_FINGERPRINT_ENV: str(recorded)})
        third = await asyncio.to_thread(snapped.state.remote)
        on_x = await _listed(p, third["container"])
        assert on_x["node_id"] == "node-x", on_x
        # enter(snap=True) ran again there: not the state node-a's snapshot holds.
        assert (third["snap_pid"], third["snap_draw"]) != (first["snap_pid"], first["snap_draw"])
        assert third["table"] == 300_000 and third["restores"] == 1
        # The node-a snapshot was not restored there; the ARM class made its own.
        classes = {s["fingerprint_id"] for s in await _snapshots(p)}
        assert classes == {here, fingerprint_id(arm)}, classes
        assert await _restores(p, here) == counted


async def _restores(p: Platform, fingerprint: str) -> int:
    """Restores counted on the ready snapshots of class ``fingerprint``."""
    return sum(s["restores"] for s in await _ready(p) if s["fingerprint_id"] == fingerprint)


async def _more_restores(p: Platform, fingerprint: str, than: int) -> int:
    """The class's restore count once it is above ``than``, else 0."""
    n = await _restores(p, fingerprint)
    return n if n > than else 0


async def _ready(p: Platform) -> list[dict[str, Any]]:
    return [s for s in await _snapshots(p) if s["state"] == "ready"]
