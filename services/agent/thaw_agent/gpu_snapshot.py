"""GPU memory snapshots (``experimental_options={"enable_gpu_snapshot": True}``).

NVIDIA's ``cuda-checkpoint --toggle --pid PID`` moves a process's CUDA state
(device memory, contexts) into host memory and releases the GPU; toggled
again, it puts it back. The agent toggles the container's process before
``runc checkpoint`` (CRIU then dumps plain host memory) and toggles the
restored process back, so ``enter(snap=True)`` may load straight to the GPU.

It needs the tool on the node (``THAW_CUDA_CHECKPOINT`` or ``PATH``) and an
NVIDIA driver >= 570. Without them the snapshot is a CPU one: the agent says
so in its log ("GPU snapshot not available on this node: <why>") and the
function should follow the two-stage pattern (load to CPU in ``snap=True``,
move to the GPU in ``snap=False``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from thaw_core.schema import FunctionSpec

MIN_DRIVER_MAJOR = 570
TOGGLE_TIMEOUT_S = 60.0


def wanted(spec: FunctionSpec) -> bool:
    return spec.wants_gpu_snapshot


def cuda_checkpoint_path() -> Path | None:
    env = os.environ.get("THAW_CUDA_CHECKPOINT")
    if env:
        return Path(env) if Path(env).is_file() else None
    found = shutil.which("cuda-checkpoint")
    return Path(found) if found else None


def unavailable(driver: str) -> str | None:
    """Why GPU snapshots can't be taken on this node (``driver``: the
    fingerprint's NVIDIA driver version); None when they can."""
    if not driver:
        return "no NVIDIA driver (NVML found no GPU)"
    try:
        major = int(driver.split(".")[0])
    except ValueError:
        return f"unreadable NVIDIA driver version {driver!r}"
    if major < MIN_DRIVER_MAJOR:
        return f"NVIDIA driver {driver} is older than {MIN_DRIVER_MAJOR}"
    if cuda_checkpoint_path() is None:
        return "cuda-checkpoint not found (THAW_CUDA_CHECKPOINT or PATH)"
    return None


async def toggle(pid: int) -> None:
    """Suspend (or resume) the CUDA state of ``pid``; RuntimeError on failure."""
    tool = cuda_checkpoint_path()
    if tool is None:
        raise RuntimeError("cuda-checkpoint not found")
    proc = await asyncio.create_subprocess_exec(
        str(tool),
        "--toggle",
        "--pid",
        str(pid),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), TOGGLE_TIMEOUT_S)
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(
            f"cuda-checkpoint --toggle --pid {pid} failed ({proc.returncode}):"
            f" {out.decode(errors='replace').strip()}"
        )
