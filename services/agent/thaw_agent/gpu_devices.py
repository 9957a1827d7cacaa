"""What a container given GPUs gets, as NVIDIA's container toolkit gives it:

- the device nodes of exactly its GPUs (``/dev/nvidia<minor>``) and the
  driver's control nodes (``/dev/nvidiactl``; ``/dev/nvidia-uvm``,
  ``/dev/nvidia-uvm-tools`` and ``/dev/nvidia-modeset`` where the node has
  them), bind-mounted from the host's (``THAW_GPU_DEVICE_DIR``, default
  ``/dev``; in a user namespace runc binds device nodes rather than making
  them, and a bind in ``mounts`` is one CRIU carries through a snapshot like
  the others), with device-cgroup rules allowing just those;
- the host driver's user-space files, bind-mounted read-only at their host
  paths: the list ``nvidia-container-cli list --libraries --binaries`` prints
  where the node has the toolkit, else ``DRIVER_LIBRARIES`` (found through
  the dynamic linker's cache, ``ldconfig -p``) and ``DRIVER_BINARIES`` (on
  PATH) -- the toolkit's "compute" and "utility" capabilities;
- ``NVIDIA_VISIBLE_DEVICES`` and ``CUDA_VISIBLE_DEVICES``: the GPUs' UUIDs.

Which GPUs: ``allocate``, from the node's NVML inventory, never one that
another container holds.

Not given (as the toolkit does with other capabilities): graphics and video
libraries, MIG capability nodes (``/dev/nvidia-caps``), firmware, and
``/proc/driver/nvidia``.

A container that takes a memory snapshot without ``enable_gpu_snapshot`` has
the nodes but no device-cgroup rule for them until it is restored
(``hidden``): its ``enter(snap=True)`` sees no GPU (NVML and CUDA find none),
so no GPU file is open when CRIU dumps it, and its ``snap=False`` hooks do.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thaw_core.gpu_names import parse_request
from thaw_core.schema import GpuInfo

CONTROL_DEVICE = "nvidiactl"
OPTIONAL_DEVICES = ("nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
# The compute and utility libraries of the driver (nvidia-container-toolkit's list).
DRIVER_LIBRARIES = (
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-allocator.so",
    "libnvidia-cfg.so",
    "libnvidia-compiler.so",
    "libnvidia-gpucomp.so",
    "libnvidia-ml.so",
    "libnvidia-nvvm.so",
    "libnvidia-opencl.so",
    "libnvidia-pkcs11.so",
    "libnvidia-ptxjitcompiler.so",
)
DRIVER_BINARIES = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)
TOOLKIT_CLI = "nvidia-container-cli"
DEVICE_DIR_ENV = "THAW_GPU_DEVICE_DIR"
# config.json annotation: the GPUs' device rules, held back while hidden.
HIDDEN_RULES_ANNOTATION = "thaw.gpu.hidden-device-rules"


class GpuSetupError(Exception):
    """The node cannot give a container the GPUs it was given; says why."""


@dataclass(frozen=True)
class GpuSetup:
    rules: list[dict[str, Any]] = field(default_factory=list)  # linux.resources.devices
    mounts: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _device(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bind mount of the device node at ``path`` and its device-cgroup rule."""
    st = os.stat(path)
    if not stat.S_ISCHR(st.st_mode):
        raise GpuSetupError(f"{path} is not a character device")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    node = {
        "destination": f"/dev/{path.name}",
        "type": "bind",
        "source": str(path),
        "options": ["bind", "rw", "nosuid", "noexec"],
    }
    rule = {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rw"}
    return node, rule


def _ro_bind(path: Path) -> dict[str, Any]:
    return {
        "destination": str(path),
        "type": "bind",
        "source": str(path),
        "options": ["rbind", "ro", "nosuid", "nodev"],
    }


def device_dir() -> Path:
    return Path(os.environ.get(DEVICE_DIR_ENV) or "/dev")


def gpu_setup(
    gpus: Sequence[GpuInfo],
    *,
    dev: Path | None = None,
    files: Sequence[Path] | None = None,
) -> GpuSetup:
    """The device rules, mounts and env of a container given ``gpus``
    (``dev``: where the device nodes are, ``device_dir()`` when None;
    ``files``: the driver's files, found on this node when None)."""
    if not gpus:
        return GpuSetup()
    dev = dev or device_dir()
    paths = [dev / f"nvidia{g.minor if g.minor >= 0 else g.index}" for g in gpus]
    paths.append(dev / CONTROL_DEVICE)
    for p in paths:
        if not p.exists():
            raise GpuSetupError(f"{p} is missing: is the NVIDIA driver loaded on this node?")
    paths += [dev / name for name in OPTIONAL_DEVICES if (dev / name).exists()]
    nodes, rules = zip(*(_device(p) for p in paths), strict=True)
    uuids = ",".join(g.uuid or str(g.index) for g in gpus)
    driver_files = driver_user_space() if files is None else files
    return GpuSetup(
        rules=list(rules),
        mounts=[*nodes, *(_ro_bind(f) for f in driver_files)],
        env={"NVIDIA_VISIBLE_DEVICES": uuids, "CUDA_VISIBLE_DEVICES": uuids},
    )


@functools.cache
def driver_user_space() -> tuple[Path, ...]:
    """The host driver's user-space libraries and tools (read once)."""
    cli = shutil.which(TOOLKIT_CLI)
    if cli is not None:
        out = subprocess.run(
            [cli, "list", "--libraries", "--binaries"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if out.returncode == 0:
            return tuple(Path(line) for line in out.stdout.split() if line.startswith("/"))
    return (*_linker_libraries(), *(Path(p) for b in DRIVER_BINARIES if (p := shutil.which(b))))


def _linker_libraries() -> list[Path]:
    """``DRIVER_LIBRARIES`` as the dynamic linker's cache lists them (64-bit)."""
    try:
        out = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return []
    return parse_linker_cache(out)


def parse_linker_cache(text: str) -> list[Path]:
    """Paths of ``DRIVER_LIBRARIES`` in ``ldconfig -p``'s output
    (``\\tlibcuda.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libcuda.so.1``)."""
    found: list[Path] = []
    for line in text.splitlines():
        name, _, rest = line.strip().partition(" ")
        abi, _, path = rest.partition(" => ")
        wanted = any(name == lib or name.startswith(lib + ".") for lib in DRIVER_LIBRARIES)
        if wanted and "64" in abi and path.startswith("/") and Path(path) not in found:
            found.append(Path(path))
    return found


def reveal(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its hidden GPUs' device rules in force (a restore's)."""
    held = config.get("annotations", {}).pop(HIDDEN_RULES_ANNOTATION, None)
    if held:
        config["linux"]["resources"]["devices"].extend(json.loads(held))
    return config


def allocate(
    inventory: Sequence[GpuInfo], held: Collection[int], request: str | None
) -> tuple[GpuInfo, ...]:
    """The GPUs a container asking for ``request`` gets on this node: the
    first of its preferences that enough free GPUs match. ``held``: indexes
    already given to other containers (a GPU is never shared). A GPU in MIG
    mode is never given whole. GpuSetupError, naming what is free, if none."""
    choices = parse_request(request)
    if not choices:
        return ()
    free = [g for g in inventory if g.index not in held and not g.mig]
    for choice in choices:
        matching = [g for g in free if choice.matches(g.name)]
        if len(matching) >= choice.count:
            return tuple(matching[: choice.count])
    offer = ", ".join(f"{g.index}: {g.name}" for g in free) or "none"
    raise GpuSetupError(
        f"gpu={request!r}: this node has no such GPUs free (free: {offer}; {len(inventory)} in all)"
    )
