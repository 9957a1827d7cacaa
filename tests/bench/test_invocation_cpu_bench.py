"""CPU per input of a warm call, summed over every process a call runs in.

Latency on a shared machine says little about what a call costs; this bench
prints the CPU milliseconds each input took in the caller, gateway,
scheduler, agent, container, nats-server and Postgres (less what the platform
spends idle over the same time), for warm SDK and HTTP round trips and for
maps of many inputs, with each role's share, so that a change's cost per
input can be compared with the figures before it (run it at both commits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import thaw as modal
from fixtures.cpu import CpuRoots, Measure
from fixtures.http_calls import batch, call
from fixtures.platform import Platform
from thaw.stack.pgcluster import PgCluster

APP = Path(__file__).parent / "apps" / "bench_noop.py"
ROUND_TRIPS = 300
MAP_INPUTS = 3000


@pytest.fixture(scope="module")
def cpu(platform: Platform, postgres: PgCluster) -> CpuRoots:
    out = platform.cli("deploy", str(APP), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return CpuRoots(platform, postgres.data_dir)


def measured(cpu: CpuRoots, title: str, n: int, work: Callable[[], None]) -> None:
    with Measure(cpu, cpu.idle_rate()) as m:
        work()
    print(m.report(title, n))


def test_sdk_cpu_per_input(cpu: CpuRoots, use_platform: Platform) -> None:
    echo = modal.Function.from_name("bench-noop", "echo")
    for i in range(20):  # warm: container up, connections open
        assert echo.remote(i) == i

    def round_trips() -> None:
        for i in range(ROUND_TRIPS):
            assert echo.remote(i) == i

    measured(cpu, "SDK warm round trips", ROUND_TRIPS, round_trips)

    wide = modal.Function.from_name("bench-noop", "echo_wide")
    assert list(wide.map(range(200))) == list(range(200))  # warm

    def mapped() -> None:
        assert list(wide.map(range(MAP_INPUTS))) == list(range(MAP_INPUTS))

    measured(cpu, "SDK map", MAP_INPUTS, mapped)


async def test_http_cpu_per_input(cpu: CpuRoots, platform: Platform) -> None:
    headers = {"Authorization": f"Bearer {platform.token}"}
    base = f"{platform.gateway_url}/v1/functions/bench-noop"
    async with aiohttp.ClientSession(headers=headers) as http:
        for i in range(20):
            await call(http, f"{base}/echo", i)
        await batch(http, platform.gateway_url, f"{base}/echo_wide", 200)

        # The idle rate, measured off the event loop (its sleep would stall it).
        idle = await asyncio.to_thread(cpu.idle_rate)
        with Measure(cpu, idle) as m:
            for i in range(ROUND_TRIPS):
                await call(http, f"{base}/echo", i)
        print(m.report("HTTP warm round trips", ROUND_TRIPS))

        with Measure(cpu, idle) as m:
            await batch(http, platform.gateway_url, f"{base}/echo_wide", MAP_INPUTS)
        print(m.report("HTTP batch", MAP_INPUTS))
