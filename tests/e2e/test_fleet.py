"""Three agent nodes, each in its own network namespace (fixtures.fleet):
placement spreads containers over them, and losing a node (its agent killed,
its namespace removed) loses no input: its containers are replaced on the
others and the scheduler marks it dead within a few heartbeats."""

from __future__ import annotations

import asyncio
import threading

import pytest
import thaw as modal
from fixtures.fleet import FLEET_NODES, Fleet, fleet  # noqa: F401 - the fixture
from fixtures.platform import E2E_APPS
from fixtures.wait import eventually

pytestmark = pytest.mark.slow

INPUTS = 150


async def test_placement_spreads_and_a_lost_node_loses_no_input(fleet: Fleet, monkeypatch):
    p = fleet.platform
    monkeypatch.setenv("THAW_GATEWAY_URL", p.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", p.token)
    await asyncio.to_thread(p.deploy, E2E_APPS / "fleet_app.py")
    hold = modal.Function.from_name("fleet-app", "hold")

    results: list[int] = []
    errors: list[BaseException] = []

    def run_map() -> None:
        try:
            results.extend(hold.map(range(INPUTS)))
        except BaseException as e:  # noqa: BLE001 - surfaced by the assertions below
            errors.append(e)

    mapper = threading.Thread(target=run_map)
    mapper.start()

    seen: list[object] = []

    async def nodes_running() -> set[str]:
        body = await asyncio.to_thread(p.api, "/v1/containers")
        seen[:] = [(c["node_id"], c.get("state"), c["inflight"]) for c in body["containers"]]
        return {c["node_id"] for c in body["containers"] if c["inflight"] > 0}

    # Three containers on three equal nodes: one on each, not packed on one.
    try:
        spread = await eventually(
            lambda: _all(nodes_running), 120, "containers running on all three nodes", every_s=0.2
        )
    except AssertionError as e:
        raise AssertionError(f"{e}; containers: {seen}\n{p.logs()[-6000:]}") from None
    assert spread == set(FLEET_NODES)

    fleet.lose("node-c")

    await asyncio.to_thread(mapper.join, 300)
    assert not mapper.is_alive(), "the map did not finish after a node was lost\n" + p.logs()
    assert errors == [], f"{errors!r}\n{p.logs()}"
    assert results == list(range(INPUTS))

    async def marked_dead() -> bool:
        nodes = await asyncio.to_thread(p.api, "/v1/nodes")
        return any(n["node_id"] == "node-c" and n["state"] == "dead" for n in nodes)

    await eventually(marked_dead, 30, "node-c marked dead", every_s=0.5)
    body = await asyncio.to_thread(p.api, "/v1/containers")
    assert "node-c" not in {c["node_id"] for c in body["containers"]}


async def _all(nodes_running) -> set[str] | None:
    nodes = await nodes_running()
    return nodes if nodes == set(FLEET_NODES) else None
