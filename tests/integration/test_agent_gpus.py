"""GPU containers on a node without a GPU: the agent reads a fake NVML
inventory and gives containers stand-in device nodes (``fixtures.fake_nvml``:
a major number no driver serves, so an open the device cgroup allows fails
with ENXIO and one it denies with EPERM). Real runc, real CRIU."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
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
from fixtures.fake_nvml import FakeGpu, fake_gpu_devices, fake_nvml
from fixtures.host import container_state_dir, needs_containers, needs_criu
from thaw_agent import gpu_devices
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus

__all__ = ["fake_nvml"]  # a fixture

pytestmark = [pytest.mark.slow, needs_containers]

APP_SOURCE = """
import errno
import os

import thaw

app = thaw.App("gpu-test")


def devices():
    seen = {}
    for name in sorted(os.listdir("/dev")):
        if name.startswith("nvidia"):
            try:
                os.close(os.open("/dev/" + name, os.O_RDWR))
                seen[name] = "opened"
            except OSError as e:
                seen[name] = errno.errorcode[e.errno]
    return seen


@app.function()
def look():
    return {"devices": devices(), "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "nvidia": os.environ.get("NVIDIA_VISIBLE_DEVICES")}


@app.cls(enable_memory_snapshot=True)
class Model:
    @thaw.enter(snap=True)
    def load(self):
        self.at_snapshot = devices()

    @thaw.enter(snap=False)
    def to_gpu(self):
        self.after_restore = devices()

    @thaw.method()
    def seen(self):
        return {"snap": self.at_snapshot, "restored": self.after_restore}
"""

A10G = FakeGpu("NVIDIA A10G", 23028, (8, 6))


@pytest.fixture
def gpu_node(
    fake_nvml: Callable[[list[FakeGpu]], None], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """NVML reports two A10Gs; their device nodes are stand-ins."""
    fake_nvml([A10G, A10G])
    root = container_state_dir("gpus")
    monkeypatch.setenv(gpu_devices.DEVICE_DIR_ENV, str(fake_gpu_devices(root, 2)))
    # No driver here: its user-space files are none.
    monkeypatch.setattr(gpu_devices, "driver_user_space", lambda: ())
    yield root
    shutil.rmtree(root, ignore_errors=True)


async def test_each_container_sees_exactly_its_own_gpu_and_none_is_shared(
    gpu_node: Path, make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    assert [g.name for g in agent.svc.heartbeat().gpus] == ["NVIDIA A10G"] * 2
    app = f"gpu-{uuid.uuid4().hex[:10]}"
    sha = await put_bundle(blob, APP_SOURCE)
    first = await agent.start(bus, app, sha, spec("look", gpu="A10G"))
    await agent.wait_state(first, "ready")
    second = await agent.start(bus, app, sha, spec("look", gpu="A10G"))
    await agent.wait_state(second, "ready")

    held = {g.index: g.container_id for g in agent.svc.heartbeat().gpus}
    assert sorted(held.values()) == sorted([first, second])
    uuids = {g.container_id: g.uuid for g in agent.svc.heartbeat().gpus}
    index = {cid: i for i, cid in held.items()}
    for _ in range(2):  # whichever container takes each call
        r = await result_of(bus, await call(bus, app, "look"), timeout_s=60)
        seen = value(r)
        mine = f"nvidia{index[r.container_id]}"
        # Its GPU and the control node, both allowed by its device cgroup
        # (ENXIO: no driver behind the stand-ins); not the other GPU.
        assert seen["devices"] == {mine: "ENXIO", "nvidiactl": "ENXIO"}
        assert seen["cuda"] == seen["nvidia"] == uuids[r.container_id]

    # A third finds no free A10G: its start fails, saying what is free.
    with pytest.raises(AssertionError, match="no such GPUs free"):
        await agent.start(bus, app, sha, spec("look", gpu="A10G"))
    # Once one goes, its GPU is free again.
    await agent.svc.manager.stop(first, 5)
    third = await agent.start(bus, app, sha, spec("look", gpu="A10G"))
    await agent.wait_state(third, "ready")
    assert {g.index: g.container_id for g in agent.svc.heartbeat().gpus}[index[first]] == third


@needs_criu
async def test_snap_true_sees_no_gpu_and_snap_false_does(
    gpu_node: Path,
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
) -> None:
    app = f"gps-{uuid.uuid4().hex[:10]}"
    cat = await catalog(app)
    agent = await make_agent()
    sha = await put_bundle(blob, APP_SOURCE)
    model = spec("Model", gpu="A10G", kind="class", methods=["seen"], enable_memory_snapshot=True)
    cid = await agent.start(bus, app, sha, model)
    await agent.wait_state(cid, "ready", timeout_s=60)
    await cat.created()
    assert agent.container(cid).info().restored

    seen = value(await result_of(bus, await call(bus, app, "Model", method="seen"), timeout_s=60))
    gpu = f"nvidia{agent.container(cid).gpus[0].minor}"
    # Before the snapshot: the nodes are there, the device cgroup denies them.
    assert seen["snap"] == {gpu: "EPERM", "nvidiactl": "EPERM"}
    # Restored: the same process, its GPU allowed.
    assert seen["restored"] == {gpu: "ENXIO", "nvidiactl": "ENXIO"}
