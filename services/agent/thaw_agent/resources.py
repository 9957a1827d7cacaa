"""A container's resource limits, as its OCI config hands them to runc, and
what its cgroup says about its death.

runc writes ``linux.resources`` into the container's cgroup on cgroup v1
(``cpu.shares``, ``cpu.cfs_quota_us``, ``memory.limit_in_bytes``,
``pids.max``) and v2 (``cpu.weight``, ``cpu.max``, ``memory.max``,
``pids.max``) alike:

- ``cpu``: the request is the container's weight (shares, 1024 a core); the
  limit (``cpu=0.5`` is its own limit, ``cpu=(0.5, 2)`` a request and a
  limit) is a CFS quota per 100 ms period: ``cpu=0.5`` runs at most half a
  core;
- ``memory``: the request is a soft reservation, the limit a hard one (memory
  and swap together): past it the kernel's OOM killer ends the container,
  which ends its inputs with "out of memory (limit N MiB)";
- every container: at most ``THAW_CONTAINER_PIDS_LIMIT`` processes and
  threads (default 4096), so a fork bomb stops there and the node lives.

A function that gave no ``cpu=`` or ``memory=`` has no hard limit of that kind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from thaw_core.schema import Resources

CPU_PERIOD_US = 100_000
DEFAULT_PIDS_LIMIT = 4096
CGROUP_ROOT = Path("/sys/fs/cgroup")
_MIB = 1024 * 1024


def pids_limit() -> int:
    return int(os.environ.get("THAW_CONTAINER_PIDS_LIMIT") or DEFAULT_PIDS_LIMIT)


def linux_resources(r: Resources) -> dict[str, Any]:
    """``linux.resources`` of a container asking for ``r`` (devices apart)."""
    # The kernel's minimum weight is 2.
    cpu: dict[str, Any] = {"shares": max(2, round(r.cpu * 1024))}
    if r.cpu_limit is not None:
        # The kernel's minimum quota is 1 ms.
        cpu.update(quota=max(1000, round(r.cpu_limit * CPU_PERIOD_US)), period=CPU_PERIOD_US)
    memory: dict[str, Any] = {"reservation": r.memory_mb * _MIB}
    if r.memory_limit_mb is not None:
        limit = r.memory_limit_mb * _MIB
        memory.update(limit=limit, swap=limit)
    return {"cpu": cpu, "memory": memory, "pids": {"limit": pids_limit()}}


def unified() -> bool:
    """Whether the host runs cgroup v2 alone (not v1 or a hybrid)."""
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def memory_cgroup(cgroups_path: str) -> Path:
    """The directory of a container's memory cgroup (``cgroupsPath`` is absolute)."""
    relative = cgroups_path.lstrip("/")
    return CGROUP_ROOT / relative if unified() else CGROUP_ROOT / "memory" / relative


def oom_kills(cgroups_path: str) -> int:
    """How many processes the OOM killer ended in the container's cgroup
    (0 when it is gone or the kernel does not count them)."""
    d = memory_cgroup(cgroups_path)
    name = "memory.events" if unified() else "memory.oom_control"
    try:
        text = (d / name).read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, count = line.partition(" ")
        if key == "oom_kill":
            return int(count)
    return 0


def out_of_memory_error(r: Resources, cgroups_path: str) -> str | None:
    """The error of a container that died with an OOM kill in its cgroup,
    None when the OOM killer had no part in it."""
    if oom_kills(cgroups_path) == 0:
        return None
    limit = r.memory_limit_mb
    return f"out of memory (limit {limit} MiB)" if limit else "out of memory"
