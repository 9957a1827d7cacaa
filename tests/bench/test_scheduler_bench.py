"""The scheduler's idle cost with few and many functions, and scale from zero.

Prints, in one run, the whole platform's idle CPU (scheduler, nats-server,
gateway and agent, read from /proc) with 10 and with 1,000 deployed functions
side by side, and a trivial function's first call after it scaled to zero
(median of several, caller's side) beside a warm call. Goals (issue #17):
idle CPU with 1,000 functions within 2x of that with 10; the first call from
zero within 200 ms. Run with ``make bench``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import thaw as modal
from fixtures.platform import Platform
from fixtures.wait import eventually

FEW, MANY = 10, 1000
IDLE_WINDOW_S = 20.0
COLD_CALLS = 5
WARM_CALLS = 20
PROCESSES = ("scheduler", "gateway", "agent@agent-a")


def write_app(path: Path, name: str, functions: int) -> Path:
    """An app of ``functions`` trivial functions (none kept warm)."""
    defs = "".join(f"\n@app.function()\ndef f{i}(x):\n    return x\n" for i in range(functions))
    path.write_text(f"import thaw as modal\n\napp = modal.App({name!r})\n{defs}")
    return path


def cpu_s(platform: Platform) -> dict[str, float]:
    """CPU seconds used so far by each platform process (children included)."""
    assert platform.nats is not None and platform.nats.proc is not None
    pids = {name: platform.procs[name].proc.pid for name in PROCESSES}  # type: ignore[union-attr]
    pids["nats-server"] = platform.nats.proc.pid
    out = {}
    for name, pid in pids.items():
        t = psutil.Process(pid).cpu_times()
        out[name] = t.user + t.system + t.children_user + t.children_system
    return out


def idle_cpu_percent(platform: Platform) -> dict[str, float]:
    """Each process's share of one core over ``IDLE_WINDOW_S`` of no traffic."""
    before, t = cpu_s(platform), time.monotonic()
    time.sleep(IDLE_WINDOW_S)
    after, wall = cpu_s(platform), time.monotonic() - t
    return {name: 100 * (after[name] - before[name]) / wall for name in before}


def deployed_count(platform: Platform) -> int:
    apps = platform.api("/v1/apps")
    return sum(len(a["functions"]) for a in apps if a["state"] == "deployed")


def deploy(platform: Platform, app_file: Path) -> float:
    t = time.monotonic()
    out = platform.cli("deploy", str(app_file), timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    return time.monotonic() - t


async def _live_containers(platform: Platform, app: str) -> int:
    """Containers of ``app`` that could take an input (a draining one may)."""
    body = await asyncio.to_thread(platform.api, "/v1/containers")
    return sum(
        c["app"] == app and c["state"] not in ("stopped", "failed") for c in body["containers"]
    )


async def _scaled_to_zero(platform: Platform, app: str) -> None:
    """Until the container that served the last call is listed (the listing
    follows heartbeats, so it may not show yet), then gone."""

    async def none_left() -> bool:
        return await _live_containers(platform, app) == 0

    await eventually(lambda: _live_containers(platform, app), 60, "listed", every_s=0.1)
    await eventually(none_left, 60, "scaled to zero", every_s=0.2)


@pytest.fixture
def cold_app(platform: Platform, tmp_path: Path) -> str:
    app_file = tmp_path / "cold.py"
    app_file.write_text(
        "import thaw as modal\n\napp = modal.App('bench-cold')\n\n"
        "@app.function(scaledown_window=1)\ndef ping(x):\n    return x\n"
    )
    deploy(platform, app_file)
    return "bench-cold"


def agent_events(platform: Platform, container_msg: str, app: str, since: float) -> list[float]:
    """When the agent logged ``container_msg`` for ``app``'s containers after ``since``."""
    out = []
    for line in (platform.root / "agent-agent-a.log").read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") != container_msg or (
            container_msg == "container started" and rec.get("app") != app
        ):
            continue
        at = datetime.fromisoformat(rec["ts"]).timestamp()
        if at >= since:
            out.append(at)
    return out


async def test_scale_from_zero_first_call(
    cold_app: str, platform: Platform, use_platform: Platform
) -> None:
    ping = modal.Function.from_name(cold_app, "ping")
    assert await ping.remote.aio(0) == 0  # image, bundle and connections warm
    cold, to_started, to_ready = [], [], []
    for i in range(COLD_CALLS):
        await _scaled_to_zero(platform, cold_app)
        called, t = time.time(), time.perf_counter()
        assert await ping.remote.aio(i) == i
        cold.append((time.perf_counter() - t) * 1000)
        started = agent_events(platform, "container started", cold_app, called)
        ready = [
            r
            for r in agent_events(platform, "container ready", cold_app, called)
            if started and r >= started[0]
        ]
        if started and ready:
            to_started.append((started[0] - called) * 1000)
            to_ready.append((ready[0] - started[0]) * 1000)
    warm = []
    for i in range(WARM_CALLS):
        t = time.perf_counter()
        assert await ping.remote.aio(i) == i
        warm.append((time.perf_counter() - t) * 1000)
    med = statistics.median
    print(
        f"\ntrivial function, caller's side: first call from zero median {med(cold):.0f} ms "
        f"(min {min(cold):.0f}, max {max(cold):.0f}, {COLD_CALLS} calls; goal 200 ms), "
        f"warm call median {med(warm):.1f} ms"
    )
    if to_started:
        print(
            f"  phases (median): call to container started (scheduler woken, agent set-up) "
            f"{med(to_started):.0f} ms, started to ready (runtime cold start) {med(to_ready):.0f} ms, "
            f"ready to result {med(cold) - med(to_started) - med(to_ready):.0f} ms; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )


# Last: it leaves 1,000 functions deployed in all, the cold app's included.
def test_idle_cpu_with_few_and_many_functions(platform: Platform, tmp_path: Path) -> None:
    deploy(platform, write_app(tmp_path / "few.py", "bench-few", FEW))
    time.sleep(3)  # the deploy's own work settles
    few = idle_cpu_percent(platform)
    few_n = deployed_count(platform)
    took = deploy(platform, write_app(tmp_path / "many.py", "bench-many", MANY - few_n))
    time.sleep(3)
    many = idle_cpu_percent(platform)
    many_n = deployed_count(platform)
    print(
        f"\nidle CPU, % of one core over {IDLE_WINDOW_S:.0f} s ({many_n - few_n} functions deployed in {took:.1f} s):"
    )
    print(f"  {'process':<12} {few_n:>6} fns {many_n:>6} fns")
    for name in few:
        print(f"  {name:<12} {few[name]:>9.2f}% {many[name]:>9.2f}%")
    total_few, total_many = sum(few.values()), sum(many.values())
    ratio = total_many / total_few if total_few else float("inf")
    print(
        f"  {'platform':<12} {total_few:>9.2f}% {total_many:>9.2f}%   {many_n}/{few_n} functions: {ratio:.2f}x (goal within 2x)"
    )
