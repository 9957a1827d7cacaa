"""Checks that need a real NVIDIA GPU (and its driver); skipped without one.

CI has no GPU: what can be checked without one is in
tests/unit/test_gpu_devices.py and tests/integration/test_agent_gpus.py (a
fake NVML, stand-in device nodes). These run the same paths on real
hardware: the real NVML inventory, the real device nodes and driver files,
``nvidia-smi`` and CUDA inside a container, and a GPU memory snapshot.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from fixtures.agent import (
    Agent,
    blob,  # noqa: F401 - a fixture
    call,
    make_agent,  # noqa: F401 - a fixture
    put_bundle,
    result_of,
    spec,
    value,
)
from fixtures.catalog import Catalog, catalog  # noqa: F401 - catalog is a fixture
from fixtures.host import needs_containers, needs_criu
from thaw_agent import gpu_snapshot
from thaw_core import hosttools
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.gpu_inventory import read_nvml

GPUS = read_nvml().gpus


def _rootfs_has_torch() -> bool:
    root = hosttools.default_rootfs()
    return any(root.glob("usr/lib/python3*/*-packages/torch")) or any(
        root.glob("usr/local/lib/python3*/*-packages/torch")
    )


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    needs_containers,
    pytest.mark.skipif(not GPUS, reason="no NVIDIA GPU (NVML reports none)"),
    pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="nvidia-smi not installed"),
]

APP_SOURCE = """
import subprocess

import thaw

app = thaw.App("real-gpu-test")


@app.function()
def smi():
    return subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout


@app.cls(enable_memory_snapshot=True)
class Torchy:
    @thaw.enter(snap=True)
    def load(self):
        import torch

        self.at_snapshot = torch.cuda.is_available()

    @thaw.enter(snap=False)
    def to_gpu(self):
        import torch

        self.after_restore = torch.cuda.is_available()

    @thaw.method()
    def seen(self):
        return {"snap": self.at_snapshot, "restored": self.after_restore}


@app.cls(enable_memory_snapshot=True, experimental_options={"enable_gpu_snapshot": True})
class OnGpu:
    @thaw.enter(snap=True)
    def load(self):
        import torch

        self.weights = torch.arange(1_000_000, device="cuda", dtype=torch.float32)

    @thaw.method()
    def total(self):
        return float(self.weights.sum().item())
"""


async def test_a_container_given_one_gpu_sees_exactly_one(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = f"rg-{uuid.uuid4().hex[:10]}"
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(bus, app, sha, spec("smi", gpu="any"))
    await agent.wait_state(cid, "ready", timeout_s=60)
    out = value(await result_of(bus, await call(bus, app, "smi"), timeout_s=60))
    lines = [line for line in out.splitlines() if line.startswith("GPU ")]
    given = agent.container(cid).gpus[0]
    print(f"node has {len(GPUS)} GPU(s); the container sees: {lines}")
    assert len(lines) == 1 and given.uuid in lines[0]


@needs_criu
@pytest.mark.skipif(not _rootfs_has_torch(), reason="the default rootfs has no torch")
async def test_torch_sees_no_gpu_at_snapshot_and_the_gpu_after_restore(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
) -> None:
    app = f"rt-{uuid.uuid4().hex[:10]}"
    cat = await catalog(app)
    agent = await make_agent()
    sha = await put_bundle(blob, APP_SOURCE)
    torchy = spec("Torchy", gpu="any", kind="class", methods=["seen"], enable_memory_snapshot=True)
    cid = await agent.start(bus, app, sha, torchy)
    await agent.wait_state(cid, "ready", timeout_s=120)
    await cat.created(120)
    seen = value(await result_of(bus, await call(bus, app, "Torchy", method="seen"), 120))
    assert seen == {"snap": False, "restored": True}


@needs_criu
@pytest.mark.skipif(not _rootfs_has_torch(), reason="the default rootfs has no torch")
@pytest.mark.skipif(
    gpu_snapshot.unavailable(read_nvml().driver) is not None,
    reason=f"no GPU snapshots here: {gpu_snapshot.unavailable(read_nvml().driver)}",
)
async def test_a_gpu_memory_snapshot_round_trips(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
    tmp_path: Path,
) -> None:
    app = f"rs-{uuid.uuid4().hex[:10]}"
    cat = await catalog(app)
    agent = await make_agent()
    sha = await put_bundle(blob, APP_SOURCE)
    on_gpu = spec(
        "OnGpu", gpu="any", kind="class", methods=["total"], enable_memory_snapshot=True,
        experimental_options={"enable_gpu_snapshot": True},
    )  # fmt: skip
    first = await agent.start(bus, app, sha, on_gpu)
    await agent.wait_state(first, "ready", timeout_s=120)
    await cat.created(120)
    await agent.svc.manager.stop(first, 5)
    # A fresh container, restored from the snapshot: its tensor is on the GPU already.
    second = await agent.start(bus, app, sha, on_gpu)
    c = await agent.wait_state(second, "ready", timeout_s=120)
    assert c.info().restored
    total = value(await result_of(bus, await call(bus, app, "OnGpu", method="total"), 120))
    assert total == pytest.approx(sum(range(1_000_000)), rel=1e-3)
