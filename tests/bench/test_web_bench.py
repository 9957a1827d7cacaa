"""A ``fastapi_endpoint`` through thaw (client -> gateway -> NATS -> agent ->
container) against the same FastAPI app under bare uvicorn on this machine,
measured side by side in one run, in turns: warm p50/p99 of one request at a
time, and requests/s with many in flight (thaw: two containers; uvicorn: one
process).
Goals (issue 11): p50 within 3x of bare uvicorn, over 1,000 requests/s.
Run with ``make bench``."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from fixtures.platform import Platform
from fixtures.ports import free_port
from fixtures.stats import pct
from fixtures.wait import eventually

APP = Path(__file__).parent / "apps" / "bench_web.py"
ROUND_TRIPS = 500
REQUESTS = 5000
IN_FLIGHT = 64


@pytest.fixture(scope="module")
def thaw_url(platform: Platform) -> str:
    out = platform.cli("deploy", str(APP), timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    return next(
        line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("web ")
    )


@pytest.fixture(scope="module")
def uvicorn_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "bench_web:bare_app", "--factory"),
            *("--app-dir", str(APP.parent), "--host", "127.0.0.1", "--port", str(port)),
            *("--log-level", "warning"),
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# Round trips to one server before a turn goes to the other; throughput rounds.
TURN = 25
ROUNDS = 3


class Client:
    """POSTs to one server through a pool of up to ``IN_FLIGHT`` connections."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url

    async def post(self, i: int) -> None:
        async with self.http.post(self.url, json={"input": i}) as r:
            body = await r.json()
            assert r.status == 200 and body == {"prediction": i}, body

    async def answers(self) -> bool:
        try:
            await self.post(0)
        except (aiohttp.ClientError, AssertionError):
            return False
        return True

    async def round_trip_ms(self, i: int) -> float:
        t = time.perf_counter()
        await self.post(i)
        return (time.perf_counter() - t) * 1000

    async def per_second(self, n: int) -> float:
        sem = asyncio.Semaphore(IN_FLIGHT)

        async def limited(i: int) -> None:
            async with sem:
                await self.post(i)

        t = time.perf_counter()
        await asyncio.gather(*(limited(i) for i in range(n)))
        return n / (time.perf_counter() - t)


async def measure(urls: dict[str, str]) -> dict[str, tuple[float, float, float]]:
    """(p50 ms, p99 ms, requests/s) of POSTs to each of ``urls``, once it answers.

    The servers are measured in turns, ``TURN`` round trips (or one throughput
    round) to each before the next, so that what else the machine is doing
    meanwhile weighs on both alike and their ratio holds from run to run. The
    first request of a turn is not timed: what thaw's services still do after
    a response (its result stored, its input acked) must not land on uvicorn's
    clock."""
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for name, url in urls.items():
            http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=IN_FLIGHT))
            clients[name] = Client(await stack.enter_async_context(http), url)
        for name, c in clients.items():
            await eventually(c.answers, 180, f"{name} at {c.url} answering")
            # Warm: every container and connection in use once.
            await asyncio.gather(*(c.post(i) for i in range(4 * IN_FLIGHT)))
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for block in range(0, ROUND_TRIPS, TURN):
            for name, c in clients.items():
                await c.post(block)  # not timed: the other server's wake may still be running
                for i in range(block, block + TURN):
                    samples[name].append(await c.round_trip_ms(i))
        rates: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(ROUNDS):
            for name, c in clients.items():
                rates[name].append(await c.per_second(REQUESTS // ROUNDS))
    return {
        name: (statistics.median(xs), pct(xs, 0.99), statistics.median(rates[name]))
        for name, xs in samples.items()
    }


async def test_fastapi_endpoint_against_bare_uvicorn(thaw_url: str, uvicorn_url: str) -> None:
    figures = await measure({"bare uvicorn": uvicorn_url + "/", "thaw": thaw_url})
    bare, through = figures["bare uvicorn"], figures["thaw"]
    print(
        f"\nfastapi_endpoint, thaw (2 containers) vs bare uvicorn (1 process), measured in turns,"
        f" {IN_FLIGHT} in flight:"
        f"\n  p50 {through[0]:.2f} ms vs {bare[0]:.2f} ms: {through[0] / bare[0]:.2f}x (goal <= 3x)"
        f"\n  p99 {through[1]:.2f} ms vs {bare[1]:.2f} ms: {through[1] / bare[1]:.2f}x"
        f"\n  {through[2]:.0f} vs {bare[2]:.0f} requests/s: {through[2] / bare[2]:.2f}x"
        " (goal > 1,000/s)"
    )
