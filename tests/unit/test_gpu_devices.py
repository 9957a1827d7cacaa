"""GPUs on a node without one, through a fake NVML: the inventory as the
agent reports it, which GPUs a container is given (never one another holds),
where the scheduler places, and what the OCI config gives the container."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.fake_nvml import CONTROL_MINOR, FAKE_MAJOR, FakeGpu, fake_gpu_devices, fake_nvml
from thaw_agent import gpu_devices, oci, userns
from thaw_agent.gpu_devices import GpuSetupError, allocate, gpu_setup, parse_linker_cache
from thaw_core.gpu_inventory import gpu_inventory, read_nvml
from thaw_core.schema import FunctionSpec, GpuInfo, NodeHeartbeat, Resources
from thaw_scheduler.placement import NodeCapacity, choose

__all__ = ["fake_nvml"]  # a fixture

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-80GB"
MIXED = [FakeGpu(H100, 81559, (9, 0)), FakeGpu(A100, 81920, (8, 0)), FakeGpu(A100, 81920, (8, 0))]


def inventory(*names: str, mig: tuple[int, ...] = ()) -> list[GpuInfo]:
    return [
        GpuInfo(index=i, name=n, memory_mb=81920, uuid=f"GPU-{i}", minor=i, mig=i in mig)
        for i, n in enumerate(names)
    ]


def test_the_inventory_is_what_nvml_reports(fake_nvml: Callable[[list[FakeGpu]], None]) -> None:
    fake_nvml([*MIXED[:2], FakeGpu("NVIDIA A100-SXM4-40GB", 40960, (8, 0), mig=True)])
    gpus = gpu_inventory()
    assert [(g.index, g.name, g.memory_mb, g.minor, g.mig) for g in gpus] == [
        (0, H100, 81559, 0, False),
        (1, A100, 81920, 1, False),
        (2, "NVIDIA A100-SXM4-40GB", 40960, 2, True),
    ]
    assert len({g.uuid for g in gpus}) == 3
    nvml = read_nvml()
    assert (nvml.driver, nvml.cuda) == ("550.54.15", "12.4")
    assert [g.compute_capability for g in nvml.gpus] == ["9.0", "8.0", "8.0"]


def test_a_container_gets_the_first_preference_with_room_and_never_a_held_gpu() -> None:
    node = inventory(H100, A100, A100)
    assert [g.index for g in allocate(node, set(), "H100,A100-80GB")] == [0]
    # The H100 is held: the second preference serves.
    assert [g.index for g in allocate(node, {0}, "H100,A100-80GB")] == [1]
    assert [g.index for g in allocate(node, {0, 1}, "H100,A100-80GB")] == [2]
    assert [g.index for g in allocate(node, {0}, "A100-80GB:2")] == [1, 2]
    assert [g.index for g in allocate(node, set(), "any:3")] == [0, 1, 2]
    assert allocate(node, set(), None) == ()
    with pytest.raises(GpuSetupError) as e:
        allocate(node, {0, 2}, "A100-80GB:2")
    assert "gpu='A100-80GB:2'" in str(e.value) and "free: 1: NVIDIA A100-SXM4-80GB" in str(e.value)
    with pytest.raises(GpuSetupError, match="free: none"):
        allocate(node, {0, 1, 2}, "any")


def test_a_gpu_in_mig_mode_is_not_given_whole() -> None:
    node = inventory(A100, A100, mig=(0,))
    assert [g.index for g in allocate(node, set(), "A100")] == [1]
    with pytest.raises(GpuSetupError):
        allocate(node, set(), "A100:2")


def test_the_scheduler_sees_held_and_mig_gpus_as_taken() -> None:
    gpus = inventory(H100, A100, A100, mig=(2,))
    gpus[0] = GpuInfo(index=0, name=H100, memory_mb=81920, container_id="ct-1")
    hb = NodeHeartbeat(
        node_id="n", cores=8, memory_mb=64000, free_cores=8, free_memory_mb=64000, gpus=gpus
    )
    node = NodeCapacity.from_heartbeat(hb)
    assert node.free_gpus == (A100,)
    assert choose([node], Resources(gpu="H100")) is None
    assert choose([node], Resources(gpu="H100,A100")) is node


def test_the_driver_libraries_are_found_in_the_linker_cache() -> None:
    cache = """1234 libs found in cache `/etc/ld.so.cache'
\tlibnvidia-ml.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libnvidia-ml.so.1
\tlibnvidia-ml.so.1 (libc6) => /lib/i386-linux-gnu/libnvidia-ml.so.1
\tlibcuda.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libcuda.so.1
\tlibcuda.so (libc6,x86-64) => /lib/x86_64-linux-gnu/libcuda.so
\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12
\tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6
"""
    assert parse_linker_cache(cache) == [
        Path("/lib/x86_64-linux-gnu/libnvidia-ml.so.1"),
        Path("/lib/x86_64-linux-gnu/libcuda.so.1"),
        Path("/lib/x86_64-linux-gnu/libcuda.so"),
    ]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mknod of device nodes")


def spec() -> FunctionSpec:
    return FunctionSpec(name="f", module="app", qualname="f", resources=Resources(gpu="A100"))


def config(tmp_path: Path, setup: gpu_devices.GpuSetup, *, hidden: bool = False) -> dict:
    runtime = oci.RuntimeFiles(bootstrap=tmp_path / "bootstrap.py", paths=())
    return oci.build_config(
        container_id="ct-1", spec=spec(), rootfs=tmp_path / "rootfs", bundle_dir=tmp_path,
        run_dir=tmp_path, cgroups_path="/thaw/n/ct-1", runtime=runtime,
        ids=userns.IdRange(100000, 65536), gpus=setup, gpus_hidden=hidden,
    )  # fmt: skip


@needs_root
def test_the_oci_config_gives_exactly_the_containers_gpus(tmp_path: Path) -> None:
    dev = fake_gpu_devices(tmp_path, 3)
    given = [inventory(A100, A100, A100)[1]]
    driver = [Path("/lib/x86_64-linux-gnu/libcuda.so.1"), Path("/usr/bin/nvidia-smi")]
    c = config(tmp_path, gpu_setup(given, dev=dev, files=driver))

    mounts = {m["destination"]: m for m in c["mounts"]}
    assert "/dev/nvidia1" in mounts and "/dev/nvidiactl" in mounts
    assert "/dev/nvidia0" not in mounts and "/dev/nvidia2" not in mounts
    assert mounts["/dev/nvidia1"]["source"] == str(dev / "nvidia1")
    assert "nodev" not in mounts["/dev/nvidia1"]["options"]
    for f in driver:
        assert mounts[str(f)]["source"] == str(f)
        assert "ro" in mounts[str(f)]["options"]
    rules = c["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r["major"], r["minor"]) for r in rules[1:]}
    assert allowed == {(FAKE_MAJOR, 1), (FAKE_MAJOR, CONTROL_MINOR)}
    env = dict(e.split("=", 1) for e in c["process"]["env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == "GPU-1"


@needs_root
def test_a_snapshot_phase_has_the_gpus_nodes_but_no_rule_until_it_is_restored(
    tmp_path: Path,
) -> None:
    dev = fake_gpu_devices(tmp_path, 1)
    setup = gpu_setup(inventory(A100), dev=dev, files=[])
    c = config(tmp_path, setup, hidden=True)
    assert c["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert "/dev/nvidia0" in {m["destination"] for m in c["mounts"]}

    revealed = gpu_devices.reveal(c)
    assert revealed["linux"]["resources"]["devices"][1:] == setup.rules
    assert gpu_devices.HIDDEN_RULES_ANNOTATION not in revealed["annotations"]


def test_a_missing_device_node_fails_the_start_saying_so(tmp_path: Path) -> None:
    (tmp_path / "dev").mkdir()
    with pytest.raises(GpuSetupError, match="nvidia0 is missing: is the NVIDIA driver loaded"):
        gpu_setup(inventory(A100), dev=tmp_path / "dev", files=[])


def test_a_container_without_gpus_gets_none(tmp_path: Path) -> None:
    c = config(tmp_path, gpu_setup([]))
    assert not any(m["destination"].startswith("/dev/nvidia") for m in c["mounts"])
    assert c["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert not any(e.startswith("CUDA_VISIBLE_DEVICES=") for e in c["process"]["env"])
