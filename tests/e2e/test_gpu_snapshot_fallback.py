"""``enable_gpu_snapshot`` on a fleet without cuda-checkpoint (and without a
GPU, as here): the deploy warns that its memory snapshots are CPU-only and
why, the container's log says so when it takes one, and the function runs.
Asked for without ``enable_memory_snapshot`` (where it does nothing), the
deploy is refused naming it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import thaw as modal
from fixtures.platform import E2E_APPS, Platform
from fixtures.wait import eventually

pytestmark = pytest.mark.slow

WAIT_S = 180.0


@pytest.fixture(scope="module")
async def snap_platform(platform_factory: Callable[..., Any]) -> Platform:
    """A platform that takes memory snapshots (its snapshots service runs)."""
    p: Platform = await platform_factory(("gpusnap-a",))
    p.ensure_service("snapshots")
    return p


@pytest.fixture
def platform(snap_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    monkeypatch.setenv("THAW_GATEWAY_URL", snap_platform.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", snap_platform.token)
    return snap_platform


async def test_gpu_snapshots_the_fleet_cannot_take_are_warned_and_cpu_only(
    platform: Platform,
) -> None:
    deployed = await asyncio.to_thread(platform.cli, "deploy", str(E2E_APPS / "gpu_snap.py"))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "warning: snapped: enable_gpu_snapshot: no node can take GPU memory snapshots" in (
        deployed.stderr
    ), deployed.stderr
    assert "CPU-only" in deployed.stderr

    assert await modal.Function.from_name("gpu-snap", "snapped").remote.aio(41) == 42

    def logged() -> str:
        out = platform.cli("app", "logs", "gpu-snap")
        return out.stdout + out.stderr

    seen: list[str] = []

    def says_cpu_only() -> bool:
        seen[:] = [logged()]
        return "GPU snapshot not available on this node" in seen[0]

    try:
        await eventually(
            lambda: asyncio.to_thread(says_cpu_only),
            WAIT_S,
            "the container's log saying its snapshot is a CPU one",
            every_s=1.0,
        )
    except AssertionError as e:
        raise AssertionError(f"{e}; the app's log:\n{seen[-1][-3000:]}") from None


async def test_gpu_snapshot_without_memory_snapshot_is_refused(platform: Platform) -> None:
    out = await asyncio.to_thread(platform.cli, "deploy", str(E2E_APPS / "gpu_snap_alone.py"))
    assert out.returncode != 0
    assert "'enable_gpu_snapshot' needs enable_memory_snapshot=True" in out.stdout + out.stderr
