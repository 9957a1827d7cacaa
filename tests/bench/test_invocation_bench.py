"""Warm call latency and map throughput, through the SDK and over HTTP.

Prints p50/p99 of a warm ``.remote()`` round trip and inputs/s of ``.map()``,
side by side with Ray 2.60's no-op task round trip and tasks/s, measured in
this same run (``fixtures.ray_peer``: Ray in a venv of its own, installed on
first use), and their ratios. Run with ``make bench``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import aiohttp
import pytest
import thaw as modal
from fixtures.http_calls import batch, call
from fixtures.platform import Platform
from fixtures.ray_peer import RayFigures, measure_ray
from fixtures.stats import pct

APP = Path(__file__).parent / "apps" / "bench_noop.py"
ROUND_TRIPS = 500
MAP_INPUTS = 5000


@pytest.fixture(scope="module")
def ray() -> RayFigures:
    """Measured before the platform starts: neither loads the machine while the other is timed."""
    return measure_ray(ROUND_TRIPS, MAP_INPUTS)


@pytest.fixture(scope="module")
def deployed(ray: RayFigures, platform: Platform) -> Platform:
    out = platform.cli("deploy", str(APP), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return platform


def report(title: str, p50_ms: float, p99_ms: float, per_s: float, ray: RayFigures) -> None:
    print(
        f"\n{title} vs Ray {ray.version}, measured in this run:"
        f"\n  warm round trip p50  thaw {p50_ms:.2f} ms  Ray {ray.p50_ms:.2f} ms"
        f"  (Ray/thaw {ray.p50_ms / p50_ms:.2f}x)"
        f"\n  warm round trip p99  thaw {p99_ms:.2f} ms  Ray {ray.p99_ms:.2f} ms"
        f"  (Ray/thaw {ray.p99_ms / p99_ms:.2f}x)"
        f"\n  map throughput       thaw {per_s:.0f} inputs/s  Ray {ray.per_s:.0f} tasks/s"
        f"  (thaw/Ray {per_s / ray.per_s:.2f}x)"
    )


def test_sdk_latency_and_throughput(
    deployed: Platform, use_platform: Platform, ray: RayFigures
) -> None:
    echo = modal.Function.from_name("bench-noop", "echo")
    for i in range(20):  # warm: container up, connections open
        assert echo.remote(i) == i
    samples = []
    for i in range(ROUND_TRIPS):
        t = time.perf_counter()
        echo.remote(i)
        samples.append((time.perf_counter() - t) * 1000)

    wide = modal.Function.from_name("bench-noop", "echo_wide")
    list(wide.map(range(200)))  # warm
    t = time.perf_counter()
    assert list(wide.map(range(MAP_INPUTS))) == list(range(MAP_INPUTS))
    per_s = MAP_INPUTS / (time.perf_counter() - t)
    report("SDK", statistics.median(samples), pct(samples, 0.99), per_s, ray)


async def test_http_latency_and_throughput(deployed: Platform, ray: RayFigures) -> None:
    headers = {"Authorization": f"Bearer {deployed.token}"}
    base = f"{deployed.gateway_url}/v1/functions/bench-noop"
    async with aiohttp.ClientSession(headers=headers) as http:
        for i in range(20):
            await call(http, f"{base}/echo", i)
        samples = []
        for i in range(ROUND_TRIPS):
            t = time.perf_counter()
            await call(http, f"{base}/echo", i)
            samples.append((time.perf_counter() - t) * 1000)

        t = time.perf_counter()
        await batch(http, deployed.gateway_url, f"{base}/echo_wide", MAP_INPUTS)
        per_s = MAP_INPUTS / (time.perf_counter() - t)
    report("HTTP", statistics.median(samples), pct(samples, 0.99), per_s, ray)
