"""A ``fastapi_endpoint`` through thaw (client -> gateway -> NATS -> agent ->
container) against the same FastAPI app under bare uvicorn on this machine,
measured side by side in one run: warm p50/p99 of one request at a time, and
requests/s with many in flight (thaw: two containers; uvicorn: one process).
Goals (issue 11): p50 within 3x of bare uvicorn, over 1,000 requests/s.
Run with ``make bench``."""

from __future__ import annotations

import asyncio
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


async def measure(url: str) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, requests/s) of POSTs to ``url``, once it answers."""
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def post(i: int) -> bool:
            async with http.post(url, json={"input": i}) as r:
                body = await r.json()
                assert r.status == 200 and body == {"prediction": i}, body
                return True

        async def answers() -> bool:
            try:
                return await post(0)
            except (aiohttp.ClientError, AssertionError):
                return False

        await eventually(answers, 180, f"{url} answering")
        # Warm: every container and connection in use once.
        await asyncio.gather(*(post(i) for i in range(4 * IN_FLIGHT)))
        samples = []
        for i in range(ROUND_TRIPS):
            t = time.perf_counter()
            await post(i)
            samples.append((time.perf_counter() - t) * 1000)

        sem = asyncio.Semaphore(IN_FLIGHT)

        async def limited(i: int) -> bool:
            async with sem:
                return await post(i)

        t = time.perf_counter()
        await asyncio.gather(*(limited(i) for i in range(REQUESTS)))
        per_s = REQUESTS / (time.perf_counter() - t)
    return statistics.median(samples), pct(samples, 0.99), per_s


async def test_fastapi_endpoint_against_bare_uvicorn(thaw_url: str, uvicorn_url: str) -> None:
    bare = await measure(uvicorn_url + "/")
    through = await measure(thaw_url)
    print(
        f"\nfastapi_endpoint, thaw (2 containers) vs bare uvicorn (1 process), {IN_FLIGHT} in flight:"
        f"\n  p50 {through[0]:.2f} ms vs {bare[0]:.2f} ms: {through[0] / bare[0]:.2f}x (goal <= 3x)"
        f"\n  p99 {through[1]:.2f} ms vs {bare[1]:.2f} ms: {through[1] / bare[1]:.2f}x"
        f"\n  {through[2]:.0f} vs {bare[2]:.0f} requests/s: {through[2] / bare[2]:.2f}x"
        " (goal > 1,000/s)"
    )
