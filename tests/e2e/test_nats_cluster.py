"""The platform on a three-server NATS cluster (streams kept on all three):
kill -9 of one server, the one leading the INVOKE stream, in the middle of a
5,000-input map, and every result comes back exactly once."""

from __future__ import annotations

import asyncio
import threading

import nats.errors
import pytest
import thaw as modal
from fixtures.nats import NatsCluster
from fixtures.platform import E2E_APPS, Platform
from fixtures.wait import eventually
from thaw_core.bus import Bus
from thaw_core.contract import INVOKE_STREAM, STREAMS

pytestmark = pytest.mark.slow

INPUTS = 5000


async def _stream_leaders(cluster: NatsCluster) -> dict[str, tuple[str, int]]:
    """Each stream's leader and replica count, asked of the cluster."""
    bus = await Bus.connect(cluster.url, name="test-cluster-probe", connect_timeout_s=10)
    try:
        out = {}
        for spec in STREAMS:
            info = await bus.js.stream_info(spec.name)
            assert info.cluster is not None, spec.name
            out[spec.name] = (info.cluster.leader or "", info.config.num_replicas or 1)
        return out
    finally:
        await bus.close(grace_s=1)


async def test_killing_a_nats_server_during_a_map_loses_no_result(platform_factory, monkeypatch):
    p: Platform = await platform_factory(agents=("node-a",), nats_cluster=3)
    cluster = p.nats_cluster
    assert cluster is not None
    leaders = await _stream_leaders(cluster)
    # Every stream is kept on all three servers.
    assert {name: r for name, (_, r) in leaders.items()} == {s.name: 3 for s in STREAMS}

    monkeypatch.setenv("THAW_GATEWAY_URL", p.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", p.token)
    await asyncio.to_thread(p.deploy, E2E_APPS / "cluster_map.py")
    square = modal.Function.from_name("cluster-map", "square")

    results: list[int] = []
    errors: list[BaseException] = []

    def run_map() -> None:
        try:
            results.extend(square.map(range(INPUTS)))
        except BaseException as e:  # noqa: BLE001 - surfaced by the assertions below
            errors.append(e)

    # results only fills at the end: watch the inputs reach the stream instead.
    mapper = threading.Thread(target=run_map)
    mapper.start()

    async def inputs_taken() -> bool:
        bus = await Bus.connect(cluster.url, name="test-cluster-progress", connect_timeout_s=10)
        try:
            info = await bus.js.stream_info(INVOKE_STREAM.name)
            return info.state.last_seq >= INPUTS // 10
        finally:
            await bus.close(grace_s=1)

    await eventually(inputs_taken, 300, "a tenth of the map's inputs on the bus", every_s=0.5)
    leader = leaders[INVOKE_STREAM.name][0]
    victim = next(s for s in cluster.servers if s.name == leader)
    victim.kill()

    await asyncio.to_thread(mapper.join, 540)
    assert not mapper.is_alive(), "the map did not finish after a NATS server died\n" + p.logs()
    assert errors == [], f"{errors!r}\n{p.logs()}"
    assert results == [i * i for i in range(INPUTS)]
    # The two left elected another leader and carried on. Asked until every
    # stream answers: one led by the dead server answers nothing while the
    # two elect its new leader, which on a loaded machine outlasted a request.

    async def new_invoke_leader() -> str:
        try:
            after = await _stream_leaders(cluster)
        except nats.errors.TimeoutError:
            return ""
        return "" if after[INVOKE_STREAM.name][0] in ("", leader) else after[INVOKE_STREAM.name][0]

    await eventually(new_invoke_leader, 120, "INVOKE led by a server still alive", every_s=1)

