"""The CPU weight of the node's containers, all together, against the host.

A container's ``cpu=`` request is its weight (``resources``) among its
siblings only: the containers of its node, under ``/thaw/<node>``. Above
them, ``/thaw`` and ``/thaw/<node>`` would keep the kernel's default weight,
that of one ordinary process, so every container of the machine together
would weigh as much as one process against the gateway, NATS or a
``stress`` beside them, and starve on a busy machine. As kubelet does for its
pods, the agent gives both the weight of the cores it advertises for
containers: ``cores × 1024`` ``cpu.shares`` on cgroup v1, ``cores × 100``
``cpu.weight`` on v2 (100 is the default, capped at the kernel's 10000).

It sets the value, whatever was there: an operator's own weight for
``/thaw`` does not survive an agent's start. Several agents on one machine
(test sessions, a node split into slices) share ``/thaw`` and set it alike,
so it does not matter which came last.

A host where this cannot be done (no cpu controller, a read-only cgroupfs
as with rootless or some containers) logs one warning: the containers still
run, weighing as one process.
"""

from __future__ import annotations

import logging
from pathlib import Path

from thaw_agent import resources
from thaw_agent.layout import CGROUP_PARENT, NodeLayout

log = logging.getLogger("thaw.agent.containers")

V1_SHARES_PER_CORE = 1024
V1_MAX_SHARES = 262_144
V2_WEIGHT_PER_CORE = 100
V2_MAX_WEIGHT = 10_000


def v1_shares(cores: int) -> int:
    return min(V1_MAX_SHARES, max(2, cores * V1_SHARES_PER_CORE))


def v2_weight(cores: int) -> int:
    return min(V2_MAX_WEIGHT, max(1, cores * V2_WEIGHT_PER_CORE))


def parent_dirs(layout: NodeLayout) -> list[Path]:
    """``/thaw`` and ``/thaw/<node>`` in the cpu controller's hierarchy."""
    base = resources.CGROUP_ROOT if resources.unified() else resources.CGROUP_ROOT / "cpu"
    return [base / p.lstrip("/") for p in (CGROUP_PARENT, layout.node_cgroup)]


def weigh_containers(layout: NodeLayout, cores: int) -> None:
    """Make the node's parent cgroups weigh as ``cores`` cores (see above);
    a warning, never an error, where the host does not let it."""
    try:
        if resources.unified():
            _weigh_v2(parent_dirs(layout), v2_weight(cores))
        else:
            _weigh_v1(parent_dirs(layout), v1_shares(cores))
    except OSError as e:
        log.warning(
            "the node's containers keep the CPU weight of one process against the host",
            extra={"error": repr(e), "node_cgroup": layout.node_cgroup},
        )


def _weigh_v1(dirs: list[Path], shares: int) -> None:
    root = dirs[0].parent
    if not (root / "cpu.shares").exists():
        # No cpu hierarchy mounted: creating dirs would only litter the tmpfs.
        raise FileNotFoundError(f"no cgroup v1 cpu controller at {root}")
    for d in dirs:
        d.mkdir(exist_ok=True)
        (d / "cpu.shares").write_text(str(shares))


def _weigh_v2(dirs: list[Path], weight: int) -> None:
    for d in dirs:
        _enable_cpu_below(d.parent)
        d.mkdir(exist_ok=True)
        (d / "cpu.weight").write_text(str(weight))


def _enable_cpu_below(parent: Path) -> None:
    """cgroup v2 gives a cgroup ``cpu.weight`` only once its parent hands
    the cpu controller down (as runc itself does when it creates the path)."""
    if "cpu" not in (parent / "cgroup.controllers").read_text().split():
        raise FileNotFoundError(f"no cpu controller in the cgroup {parent}")
    subtree = parent / "cgroup.subtree_control"
    if "cpu" not in subtree.read_text().split():
        subtree.write_text("+cpu")
