"""Fingerprints and snapshot compatibility, on RECORDED fingerprints of
different machines (tests/data/fingerprints/). ``this-machine-amd-epyc-vm``
is the development VM's own, recorded with::

    python -c "import json, msgspec; from thaw_core.fingerprint import local_fingerprint; \
print(json.dumps(msgspec.to_builtins(local_fingerprint()), indent=1))"

the others are realistic nodes of other kinds (bare-metal EPYC, an EPYC whose
hypervisor shows part of AVX-512, an older Intel Xeon, an 8x H100 node, an
A10G node, a Graviton3 arm64 node)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from thaw_core.fingerprint import (
    TEST_FINGERPRINT_ENV,
    compatible,
    fingerprint_id,
    incompatibility,
    load_fingerprint,
    local_fingerprint,
    read_cpu,
)
from thaw_core.schema import Fingerprint, GpuFingerprint

DATA = Path(__file__).parent.parent / "data" / "fingerprints"


def fp(name: str) -> Fingerprint:
    return load_fingerprint(DATA / f"{name}.json")


def test_every_recorded_fingerprint_restores_its_own_snapshots() -> None:
    for path in sorted(DATA.glob("*.json")):
        f = load_fingerprint(path)
        assert compatible(f, f), (path.name, incompatibility(f, f))


def test_ids_are_pinned_across_runs_and_processes() -> None:
    here = fp("this-machine-amd-epyc-vm")
    # Pinned: a change to the canonical encoding would silently orphan every
    # snapshot in every catalog, so it must show up here first.
    assert fingerprint_id(here) == (
        "09c47a6354d1bcacc436dc6dd4baf26aab16cbdda3e1ba96e18a3bdb749a5539"
    )
    code = (
        "from pathlib import Path; from thaw_core.fingerprint import load_fingerprint, "
        f"fingerprint_id; print(fingerprint_id(load_fingerprint(Path({str(DATA / 'h100-node-xeon-8480.json')!r}))))"
    )
    other_process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other_process == fingerprint_id(fp("h100-node-xeon-8480"))


def test_id_ignores_flag_and_gpu_order_and_versions_outside_the_class() -> None:
    here = fp("h100-node-xeon-8480")
    flags = list(here.cpu.flags)
    random.Random(7).shuffle(flags)
    shuffled = msgspec.structs.replace(
        here,
        cpu=msgspec.structs.replace(here.cpu, flags=flags + flags[:3]),  # order and repeats
        gpus=list(reversed(here.gpus)),
        runc="1.2.0",
        kernel="6.8.0-60-generic",
        criu="4.1.2",  # a patch release is the same class
    )
    assert fingerprint_id(shuffled) == fingerprint_id(here)
    assert fingerprint_id(msgspec.structs.replace(here, criu="4.2.0")) != fingerprint_id(here)


def test_ids_differ_between_machine_kinds() -> None:
    ids = {fingerprint_id(load_fingerprint(p)) for p in DATA.glob("*.json")}
    assert len(ids) == len(list(DATA.glob("*.json")))


def test_a_node_with_a_superset_of_flags_restores() -> None:
    # The VM's own snapshot on bare metal of the same family (more flags).
    assert compatible(fp("this-machine-amd-epyc-vm"), fp("amd-epyc-9454-bare-metal"))
    # A snapshot of the node with part of AVX-512 restores on this one.
    assert compatible(fp("amd-epyc-avx512-subset"), fp("this-machine-amd-epyc-vm"))


def test_a_node_missing_one_flag_does_not_restore() -> None:
    why = incompatibility(fp("this-machine-amd-epyc-vm"), fp("amd-epyc-avx512-subset"))
    assert why is not None and "avx512_bf16" in why
    here = fp("this-machine-amd-epyc-vm")
    one_less = msgspec.structs.replace(
        here, cpu=msgspec.structs.replace(here.cpu, flags=[f for f in here.cpu.flags if f != "avx2"])
    )
    assert not compatible(here, one_less)
    assert compatible(one_less, here)


def test_vendor_and_architecture_must_match() -> None:
    assert "vendor" in (incompatibility(fp("intel-xeon-e5-2686-v4"), fp("this-machine-amd-epyc-vm")) or "")
    assert "architecture" in (incompatibility(fp("arm64-graviton3"), fp("amd-epyc-9454-bare-metal")) or "")
    assert not compatible(fp("this-machine-amd-epyc-vm"), fp("arm64-graviton3"))


def test_gpu_snapshots_need_the_same_gpus_driver_and_cuda() -> None:
    h100, a10g = fp("h100-node-xeon-8480"), fp("a10g-node-epyc-7r32")
    assert not compatible(h100, a10g)
    assert not compatible(a10g, h100)
    assert "GPUs" in (incompatibility(h100, msgspec.structs.replace(h100, gpus=h100.gpus[:4])) or "")
    newer_driver = msgspec.structs.replace(h100, driver="575.51.03", cuda="12.9")
    assert "driver" in (incompatibility(h100, newer_driver) or "")
    other_gpu = msgspec.structs.replace(
        h100, gpus=[GpuFingerprint(name="NVIDIA H100 PCIe", compute_capability="9.0")] * 8
    )
    assert not compatible(h100, other_gpu)


def test_a_snapshot_taken_without_gpus_ignores_the_nodes_gpus() -> None:
    h100 = fp("h100-node-xeon-8480")
    cpu_only = msgspec.structs.replace(h100, gpus=[], driver="", cuda="")
    assert compatible(cpu_only, h100)
    assert not compatible(h100, cpu_only)  # and a GPU snapshot needs its GPUs


def test_criu_must_match_at_major_minor() -> None:
    here = fp("this-machine-amd-epyc-vm")
    assert compatible(here, msgspec.structs.replace(here, criu="4.1.2"))
    assert "CRIU" in (incompatibility(here, msgspec.structs.replace(here, criu="4.2")) or "")
    assert not compatible(here, msgspec.structs.replace(here, criu=""))


def test_kernel_same_major_and_not_older() -> None:
    here = fp("this-machine-amd-epyc-vm")  # 6.18
    older = msgspec.structs.replace(here, kernel="6.8.0-52-generic")
    assert compatible(older, here)  # dumped on 6.8, restored on 6.18
    assert "kernel" in (incompatibility(here, older) or "")  # not the other way round
    assert not compatible(msgspec.structs.replace(here, kernel="5.15.0-1"), here)
    assert compatible(here, msgspec.structs.replace(here, kernel="6.18.50-other-build"))


def test_the_test_fingerprint_file_replaces_the_local_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(TEST_FINGERPRINT_ENV, str(DATA / "arm64-graviton3.json"))
    assert local_fingerprint() == fp("arm64-graviton3")
    bad = tmp_path / "bad.json"
    bad.write_text('{"cpu": {"arch": 1}}')
    monkeypatch.setenv(TEST_FINGERPRINT_ENV, str(bad))
    with pytest.raises(ValueError, match="not a recorded thaw Fingerprint"):
        local_fingerprint()


def test_this_nodes_fingerprint_is_read_and_restores_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TEST_FINGERPRINT_ENV, raising=False)
    mine = local_fingerprint()
    assert mine.cpu.arch and mine.cpu.flags == sorted(set(mine.cpu.flags))
    assert local_fingerprint() is mine  # read once per process
    assert compatible(mine, mine)
    assert len(fingerprint_id(mine)) == 64


def test_arm64_cpuinfo_is_parsed() -> None:
    cpuinfo = (
        "processor\t: 0\nBogoMIPS\t: 2100.00\n"
        "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\n"
        "CPU part\t: 0xd40\nCPU revision\t: 1\n\n"
        "processor\t: 1\nFeatures\t: fp\n"
    )
    cpu = read_cpu(cpuinfo)
    assert cpu.vendor == "ARM" and cpu.model == "part 0xd40"
    features = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve"
    assert cpu.flags == sorted(features.split())
