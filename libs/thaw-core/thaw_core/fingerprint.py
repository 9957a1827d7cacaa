"""Node fingerprints: what a memory snapshot needs from the node that restores it.

- ``local_fingerprint()`` reads this node's (CPU from ``platform.machine()`` and
  /proc/cpuinfo, GPUs through ``gpu_inventory.read_nvml``,
  CRIU/runc/kernel from ``hosttools.versions()``), once per process. The
  test-only variable ``THAW_TEST_FINGERPRINT_FILE`` names a JSON file with a
  recorded ``Fingerprint`` to report instead, so that tests can play a node of
  another kind (tests/data/fingerprints/ holds several).
- ``fingerprint_id(fp)`` names the *fingerprint class* snapshots are kept per:
  a sha256 over a canonical encoding of arch, vendor, model, the sorted flag
  set, the GPUs, driver, CUDA and CRIU (major.minor). Nothing that varies
  between identical machines (hostnames, flag order) goes in.
- ``compatible(snapshot_fp, node_fp)`` says whether a snapshot taken on a node
  of ``snapshot_fp`` may be restored on one of ``node_fp`` (DESIGN.md,
  "Memory snapshots"):

  * same CPU architecture and vendor;
  * the node's CPU flags are a superset of the snapshot's: code in the image
    (glibc's ifuncs, numpy/torch kernels) picked instruction sets at start-up
    and keeps using them after the restore;
  * a snapshot that saw GPUs needs the very same GPUs (model and compute
    capability, count), driver and CUDA versions. A snapshot taken without
    GPUs (the usual case: ``enter(snap=True)`` sees no GPU) ignores the
    node's GPUs;
  * CRIU equal at major.minor: patch releases fix bugs without changing the
    image format or what the restorer expects, while minor releases have
    changed both (new image entries, rseq/ns handling); an unknown ("") CRIU
    only matches an unknown one;
  * kernel: same major version, and the node's (major, minor) at least the
    snapshot's. CRIU restores across kernel versions as a rule, but a process
    dumped on a newer kernel may use features (rseq, clone3, new
    prctl/memfd flags) an older one lacks, and a major version is a big
    enough jump to be conservative about. The kernel is not part of the
    class id: nodes of one class may run slightly different kernels.

  runc's version is recorded but not compared: runc only wraps CRIU, and its
  own state in the image (descriptors.json) has been stable for years.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
from pathlib import Path

import msgspec

from thaw_core import hosttools
from thaw_core.gpu_inventory import read_nvml
from thaw_core.schema import CpuFingerprint, Fingerprint, GpuFingerprint

__all__ = [
    "TEST_FINGERPRINT_ENV",
    "compatible",
    "fingerprint_id",
    "incompatibility",
    "load_fingerprint",
    "local_fingerprint",
    "read_cpu",
]


TEST_FINGERPRINT_ENV = "THAW_TEST_FINGERPRINT_FILE"
"""Test-only: a JSON file with a recorded Fingerprint that this process reports as its own."""

_decoder = msgspec.json.Decoder(Fingerprint)
_canonical = msgspec.json.Encoder(order="sorted")

# arm64 /proc/cpuinfo names the implementer by its JEDEC code.
_ARM_IMPLEMENTERS = {
    "0x41": "ARM",
    "0x42": "Broadcom",
    "0x43": "Cavium",
    "0x46": "Fujitsu",
    "0x48": "HiSilicon",
    "0x4e": "NVIDIA",
    "0x51": "Qualcomm",
    "0x61": "Apple",
    "0xc0": "Ampere",
}


# ---------------------------------------------------------------- reading this node


def local_fingerprint() -> Fingerprint:
    """This node's fingerprint (or the recorded one ``THAW_TEST_FINGERPRINT_FILE`` names)."""
    recorded = os.environ.get(TEST_FINGERPRINT_ENV)
    if recorded:
        return load_fingerprint(Path(recorded))
    return _read_local()


def load_fingerprint(path: Path) -> Fingerprint:
    """A recorded fingerprint; a clear error when the file is not one."""
    try:
        return _decoder.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError) as e:
        raise ValueError(f"{path}: not a recorded thaw Fingerprint: {e}") from e


@functools.cache
def _read_local() -> Fingerprint:
    tools = hosttools.versions()
    nvml = read_nvml()
    return Fingerprint(
        cpu=read_cpu(),
        gpus=[
            GpuFingerprint(name=g.name, compute_capability=g.compute_capability) for g in nvml.gpus
        ],
        driver=nvml.driver,
        cuda=nvml.cuda,
        criu=tools.get("criu", ""),
        runc=tools.get("runc", ""),
        kernel=tools.get("kernel", "") or platform.release(),
    )


def read_cpu(cpuinfo: str | None = None) -> CpuFingerprint:
    """The CPU part, from /proc/cpuinfo's first processor (x86 and arm64 layouts)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields = _first_processor(cpuinfo)
    arch = _normal_arch(platform.machine())
    if "vendor_id" in fields:  # x86
        vendor, model = fields["vendor_id"], fields.get("model name", "")
        flags = fields.get("flags", "")
    else:  # arm64 (and others): implementer/part codes and "Features"
        code = fields.get("CPU implementer", "").lower()
        vendor = _ARM_IMPLEMENTERS.get(code, code)
        part = fields.get("CPU part", "")
        model = fields.get("model name", "") or (f"part {part}" if part else "")
        flags = fields.get("Features", "")
    return CpuFingerprint(
        arch=arch, vendor=vendor, model=" ".join(model.split()), flags=sorted(set(flags.split()))
    )


def _first_processor(cpuinfo: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields.get("processor") is not None and len(fields) > 1:
                break  # the end of the first processor's block
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _normal_arch(machine: str) -> str:
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine.lower())


# ---------------------------------------------------------------- classes


def fingerprint_id(fp: Fingerprint) -> str:
    """The fingerprint class: sha256 hex of the parts that decide what restores where."""
    canonical = {
        "arch": fp.cpu.arch,
        "vendor": fp.cpu.vendor,
        "model": fp.cpu.model,
        "flags": sorted(set(fp.cpu.flags)),
        "gpus": sorted([g.name, g.compute_capability] for g in fp.gpus),
        "driver": fp.driver,
        "cuda": fp.cuda,
        "criu": _major_minor(fp.criu),
    }
    return hashlib.sha256(_canonical.encode(canonical)).hexdigest()


def compatible(snapshot_fp: Fingerprint, node_fp: Fingerprint) -> bool:
    """May a snapshot taken on ``snapshot_fp`` be restored on ``node_fp``? (module docstring)"""
    return incompatibility(snapshot_fp, node_fp) is None


def incompatibility(snapshot_fp: Fingerprint, node_fp: Fingerprint) -> str | None:
    """Why a snapshot of ``snapshot_fp`` cannot be restored on ``node_fp``; None when it can."""
    snap, node = snapshot_fp, node_fp
    if snap.cpu.arch != node.cpu.arch:
        return f"CPU architecture {node.cpu.arch!r} is not {snap.cpu.arch!r}"
    if snap.cpu.vendor != node.cpu.vendor:
        return f"CPU vendor {node.cpu.vendor!r} is not {snap.cpu.vendor!r}"
    missing = set(snap.cpu.flags) - set(node.cpu.flags)
    if missing:
        return "the node's CPU lacks " + ", ".join(sorted(missing))
    if snap.gpus:
        if _gpu_set(snap) != _gpu_set(node):
            return f"GPUs {_gpu_set(node)} are not {_gpu_set(snap)}"
        if (snap.driver, snap.cuda) != (node.driver, node.cuda):
            return f"driver/CUDA {node.driver}/{node.cuda} is not {snap.driver}/{snap.cuda}"
    if _major_minor(snap.criu) != _major_minor(node.criu):
        return f"CRIU {node.criu or '(none)'} is not {snap.criu or '(none)'} at major.minor"
    snap_kernel, node_kernel = _kernel(snap.kernel), _kernel(node.kernel)
    if snap_kernel and node_kernel:
        if snap_kernel[0] != node_kernel[0] or node_kernel < snap_kernel:
            return f"kernel {node.kernel} is older than or a major apart from {snap.kernel}"
    elif snap_kernel != node_kernel:
        return "one kernel version is unknown"
    return None


def _gpu_set(fp: Fingerprint) -> list[tuple[str, str]]:
    return sorted((g.name, g.compute_capability) for g in fp.gpus)


def _major_minor(version: str) -> str:
    m = re.match(r"^(\d+)\.(\d+)", version.strip())
    return f"{m.group(1)}.{m.group(2)}" if m else version.strip()


def _kernel(release: str) -> tuple[int, int] | None:
    m = re.match(r"^(\d+)\.(\d+)", release.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None
