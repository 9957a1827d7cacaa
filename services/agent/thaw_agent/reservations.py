"""What the node's live containers and sandboxes hold, as the heartbeat
reports it free: CPU and memory as they asked (requests, not use), and disk
as their ``ephemeral_disk`` images may still grow.

An ephemeral disk is a sparse image (``ephemeral_disk``): the node's file
system sees only what was written. The part not yet written is promised all
the same, so the heartbeat's free disk is the file system's free space less
it, and the scheduler never places two containers on room only one can fill.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import psutil
from thaw_core.schema import Resources

from thaw_agent.ephemeral_disk import IMAGE_NAME
from thaw_agent.layout import ContainerPaths

_MIB = 1024 * 1024


def node_cores() -> int:
    """The cores the node offers its containers: what the heartbeat
    advertises to the scheduler and the containers' parent cgroups weigh
    (``cgroup_weight``)."""
    return psutil.cpu_count(logical=True) or 1


class Reserved(NamedTuple):
    cores: float = 0.0
    memory_mb: int = 0
    # Ephemeral disk not yet written (MiB).
    disk_mb: int = 0

    def plus(self, other: Reserved) -> Reserved:
        return Reserved(
            self.cores + other.cores,
            self.memory_mb + other.memory_mb,
            self.disk_mb + other.disk_mb,
        )


def _unwritten_mb(paths: ContainerPaths, disk_mb: int) -> int:
    try:
        written = (paths.dir / IMAGE_NAME).stat().st_blocks * 512 // _MIB
    except FileNotFoundError:  # not made yet: all of it is still to come
        written = 0
    return max(0, disk_mb - written)


def reserved(held: Iterable[tuple[Resources, ContainerPaths]]) -> Reserved:
    """What live containers (their resources, where their files are) hold."""
    total = Reserved()
    for r, paths in held:
        disk = _unwritten_mb(paths, r.ephemeral_disk_mb) if r.ephemeral_disk_mb else 0
        total = total.plus(Reserved(r.cpu, r.memory_mb, disk))
    return total


def disk_mb(where: Path) -> tuple[int, int]:
    """(size, free) in MiB of the file system holding ``where`` (or its
    nearest existing parent: the containers dir is made at a first container)."""
    while not where.exists() and where != where.parent:
        where = where.parent
    st = os.statvfs(where)
    return st.f_blocks * st.f_frsize // _MIB, st.f_bavail * st.f_frsize // _MIB
