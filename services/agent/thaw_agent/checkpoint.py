"""A container's memory snapshot: checkpoint, restore in place, or resume cold.

Once a runtime started for a snapshot says ``SnapshotReady``, the agent
checkpoints the container (``runc checkpoint``; a GPU snapshot first moves
the CUDA state to host memory with ``gpu_snapshot.toggle``), restores it in
place from the fresh images (proving that the snapshot restores) and stores
them in the background. Whatever fails, the container goes on cold: the
paused process resumes where CRIU left it running, or a fresh one starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from thaw_core import contract
from thaw_core.private_file import write_private
from thaw_core.schema import SnapshotCreateFailed

from thaw_agent import gpu_devices, gpu_snapshot
from thaw_agent.channel import RuntimeChannel
from thaw_agent.layout import ContainerPaths
from thaw_agent.process import process_alive
from thaw_agent.snapshot_archive import copy_tree
from thaw_agent.snapshots import Checkpoint, Plan, Snapshots

if TYPE_CHECKING:
    from thaw_agent.container import Container

log = logging.getLogger("thaw.agent.containers")

SNAPSHOT_ENV = {contract.ENV_SNAPSHOT: "1"}
# In a snapshot's images dir: its process's CUDA state was suspended (GPU snapshot).
CUDA_SUSPENDED = "thaw-cuda-suspended"


async def adopt_changes(snapshot_dir: Path, paths: ContainerPaths) -> None:
    """The snapshot's file-system changes become the container's own."""
    await asyncio.to_thread(copy_tree, snapshot_dir / "upper", paths.upper)


async def restore(c: Container, images: Path, *, stdout_fd: int, stderr_fd: int) -> int:
    """``runc restore`` the container from ``images`` with the given stdio;
    a GPU snapshot's CUDA state goes back on the GPU. Returns the pid."""
    p = c.paths
    work = p.dir / f"criu-restore-{time.monotonic_ns()}"
    work.mkdir()
    with c.phases.timed("runc restore"):
        pid = await c.host.runc.restore_detached(
            c.id,
            bundle=p.oci,
            image_path=images,
            work_path=work,
            pid_file=p.pid_file,
            log_file=p.runc_log,
            stdout_fd=stdout_fd,
            stderr_fd=stderr_fd,
        )
    c.phases.add_criu_log(work / "restore.log")
    if (images / CUDA_SUSPENDED).exists():
        await gpu_snapshot.toggle(pid)
    return pid


async def snapshot(c: Container, claim: Checkpoint) -> RuntimeChannel:
    """The runtime paused for its snapshot: checkpoint it, bring it back
    (restored in place from the images just written: that proves the
    snapshot restores) and store the snapshot in the background.
    Whatever fails, the container goes on cold. Returns the channel the
    runtime reconnects to. Timed apart ("snapshot"): a cold start without
    it is what the snapshot's restores are weighed against."""
    with c.phases.timed("snapshot"):
        return await _snapshot(c, claim)


async def _snapshot(c: Container, claim: Checkpoint) -> RuntimeChannel:
    p = c.paths
    snapshots = c.host.snapshots
    assert snapshots is not None
    snapshot_id = claim.claim.snapshot_id
    # Outside the container's dir: the container may stop while it is packed.
    staging = snapshots.cache.staging(snapshot_id)
    old_pid = c.pid
    await c.close_channel()
    try:
        c.pid = 0  # its end is expected now
        (staging / "images").mkdir(parents=True)
        work = p.dir / "criu-dump"
        work.mkdir()
        started = time.monotonic()
        if await _gpu_snapshot(c, snapshots):
            # CUDA state into host memory, where CRIU dumps it; the marker
            # tells every restore to toggle it back.
            await gpu_snapshot.toggle(old_pid)
            (staging / "images" / CUDA_SUSPENDED).touch()
        await c.host.runc.checkpoint(
            c.id, image_path=staging / "images", work_path=work, log_file=p.runc_log
        )
        dumped = time.monotonic()
        # Copied before the restored process writes to it again.
        await asyncio.to_thread(copy_tree, p.upper, staging / "upper")
        c.check_not_ending()
        channel = await c.listen()
        await asyncio.to_thread(_reveal_gpus, p)
        c.pid = await c.launch(staging / "images")
        c.watch_exit(c.pid)
        c.restored = True
        c.system_log(
            f"memory snapshot {snapshot_id} taken in {dumped - started:.2f}s;"
            f" container restored from it (pid {c.pid})"
        )
    except Exception as e:  # noqa: BLE001 - the container goes on without a snapshot
        log.warning(
            "memory snapshot failed",
            extra={"container_id": c.id, "snapshot_id": snapshot_id, "error": str(e)},
        )
        c.system_log(f"memory snapshot failed, going on without it: {e}")
        await snapshots.publish(c.app, SnapshotCreateFailed(snapshot_id=snapshot_id, error=str(e)))
        if (staging / "images" / CUDA_SUSPENDED).exists() and process_alive(old_pid):
            with contextlib.suppress(Exception):  # its CUDA state back where it was
                await gpu_snapshot.toggle(old_pid)
        await asyncio.to_thread(shutil.rmtree, staging, True)
        channel = await _resume_cold(c, old_pid)
    else:
        snapshots.store_later(claim.claim, staging, c.app, c.cold_start_s)
    return channel


async def _gpu_snapshot_possible(c: Container, snapshots: Snapshots) -> tuple[bool, str | None]:
    """(whether this snapshot takes the GPU's state too, why not where the
    function asks for it and the node can't)."""
    if not gpu_snapshot.wanted(c.spec):
        return False, None
    why = gpu_snapshot.unavailable((await snapshots.fingerprint()).driver)
    return why is None, why


async def hides_gpus(c: Container, plan: Plan) -> bool:
    """Whether ``c``'s GPUs wait for its restore (``gpu_devices``): it takes
    a memory snapshot that does not take the GPU's state."""
    if not c.gpus or not isinstance(plan, Checkpoint) or c.host.snapshots is None:
        return False
    possible, _ = await _gpu_snapshot_possible(c, c.host.snapshots)
    return not possible


async def _gpu_snapshot(c: Container, snapshots: Snapshots) -> bool:
    """Whether this snapshot takes the GPU's state too; says why not when
    the function asks for it and the node can't."""
    possible, why = await _gpu_snapshot_possible(c, snapshots)
    if possible or why is None:
        return possible
    text = f"GPU snapshot not available on this node: {why}; taking a CPU snapshot"
    log.warning(text, extra={"container_id": c.id})
    c.system_log(text)
    return False


def _reveal_gpus(p: ContainerPaths) -> None:
    """The restored process sees the GPUs its snapshot phase did not."""
    config_path = p.oci / "config.json"
    write_private(config_path, json.dumps(gpu_devices.reveal(json.loads(config_path.read_text()))))


async def _resume_cold(c: Container, old_pid: int) -> RuntimeChannel:
    """After a failed checkpoint: the process takes up where it paused
    when CRIU left it running; otherwise a fresh cold one starts."""
    c.restored = False
    c.check_not_ending()
    channel = await c.listen()
    if process_alive(old_pid):
        c.pid = old_pid
        c.watch_exit(old_pid)
        return channel
    with contextlib.suppress(Exception):
        await c.host.runc.delete(c.id)
    config_path = c.paths.oci / "config.json"
    config = gpu_devices.reveal(json.loads(config_path.read_text()))
    env = config["process"]["env"]
    config["process"]["env"] = [e for e in env if e.partition("=")[0] not in SNAPSHOT_ENV]
    write_private(config_path, json.dumps(config))
    c.pid = await c.launch(None)
    c.watch_exit(c.pid)
    return channel
