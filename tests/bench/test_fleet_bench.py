"""``.map`` throughput on 1, 2 and 3 agent nodes, each in its own network
namespace (fixtures.fleet), measured in one run: a fresh fleet of each size
in turn, so that the function's containers spread over all its nodes
(placement takes the node with the most free cores).

Every node runs on this one machine, so on 2 cores the ratio shows the
overhead of more agents sharing the same CPUs, not a speed-up; on separate
machines it would. Run with ``make bench``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import thaw as modal
from fixtures.fleet import FLEET_NODES, start_fleet

APP = Path(__file__).parent / "apps" / "bench_fleet.py"
INPUTS = 2000


async def test_map_throughput_on_one_two_and_three_nodes(pg_dsn, tmp_path, monkeypatch):
    expected = sum(i * i for i in range(2000))
    rates: dict[int, float] = {}
    for count in (1, 2, 3):
        nodes = FLEET_NODES[:count]
        async with start_fleet(pg_dsn, tmp_path / f"fleet-{count}", nodes=nodes) as fleet:
            p = fleet.platform
            monkeypatch.setenv("THAW_GATEWAY_URL", p.gateway_url)
            monkeypatch.setenv("THAW_TOKEN", p.token)
            await asyncio.to_thread(p.deploy, APP)
            work = modal.Function.from_name("bench-fleet", "work")

            def measure(work: modal.Function = work) -> float:
                list(work.map(range(200)))  # its containers up first
                start = time.monotonic()
                out = list(work.map(range(INPUTS)))
                took = time.monotonic() - start
                assert out == [expected + x for x in range(INPUTS)]
                return INPUTS / took

            rates[count] = await asyncio.to_thread(measure)
            placed = sorted(c["node_id"] for c in p.api("/v1/containers")["containers"])
            print(f"\n{count} node(s): {rates[count]:.0f} inputs/s, containers on {placed}")
    print(
        f"\n.map of {INPUTS} inputs: 1 node {rates[1]:.0f}/s, 2 nodes {rates[2]:.0f}/s,"
        f" 3 nodes {rates[3]:.0f}/s; 3-node/1-node ratio {rates[3] / rates[1]:.2f}"
        " (every node on this one machine: on 2 cores the ratio shows overhead, not speed-up)"
    )
