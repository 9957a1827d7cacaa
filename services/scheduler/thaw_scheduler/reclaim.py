"""Warm idle containers give way to work that finds no room.

A container kept warm after its inputs (its ``scaledown_window``) still holds
the CPU, memory, GPUs and ephemeral disk it asked for, as the agent counts reservations. On
a full node that would leave a new input, or a sandbox, waiting behind
containers doing nothing. Work that finds no room may therefore have idle
containers stopped: ready, running nothing, of functions with no input
stored, above their ``min_containers``, the longest idle first, on the node
that needs the fewest of them stopped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from thaw_core.schema import ContainerInfo, Resources

from thaw_scheduler.placement import NodeCapacity, fits, gpu_choice


@dataclass(frozen=True)
class Idle:
    """A container that may be stopped to make room."""

    node_id: str
    container: ContainerInfo
    resources: Resources
    # The GPUs it was given (by name), freed with it.
    gpus: tuple[str, ...] = ()


def released(node: NodeCapacity, idle: Idle) -> NodeCapacity:
    """The node's capacity once ``idle`` has stopped."""
    return replace(
        node,
        free_cores=node.free_cores + idle.resources.cpu,
        free_memory_mb=node.free_memory_mb + idle.resources.memory_mb,
        free_gpus=node.free_gpus + idle.gpus,
        free_disk_mb=node.free_disk_mb + (idle.resources.ephemeral_disk_mb or 0),
    )


def _helps(node: NodeCapacity, r: Resources, idle: Idle) -> bool:
    """Whether stopping ``idle`` lessens something ``node`` lacks for ``r``."""
    if node.free_cores < r.cpu and idle.resources.cpu > 0:
        return True
    if node.free_memory_mb < r.memory_mb and idle.resources.memory_mb > 0:
        return True
    if node.free_disk_mb < (r.ephemeral_disk_mb or 0) and idle.resources.ephemeral_disk_mb:
        return True
    return bool(r.gpu) and gpu_choice(node, r.gpu) is None and bool(idle.gpus)


def make_room(
    capacity: Mapping[str, NodeCapacity], idle: Sequence[Idle], r: Resources
) -> tuple[NodeCapacity, list[Idle]] | None:
    """The node where ``r`` fits after stopping the fewest idle containers,
    its capacity once they have stopped, and which; None when stopping every
    idle container of any one node would not make room."""
    by_node: dict[str, list[Idle]] = defaultdict(list)
    for i in sorted(idle, key=lambda i: i.container.idle_since):
        by_node[i.node_id].append(i)
    best: tuple[NodeCapacity, list[Idle]] | None = None
    for node_id in sorted(by_node):
        node = capacity.get(node_id)
        if node is None:
            continue
        taken: list[Idle] = []
        for candidate in by_node[node_id]:
            if fits(node, r):
                break
            if _helps(node, r, candidate):
                node = released(node, candidate)
                taken.append(candidate)
        if fits(node, r) and (best is None or len(taken) < len(best[1])):
            best = (node, taken)
    return best
