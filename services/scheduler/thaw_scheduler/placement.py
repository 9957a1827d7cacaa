"""Which node a new container goes to.

A node qualifies when its free CPU, memory, GPUs and disk (for an
``ephemeral_disk``) cover the function's request (for GPUs: the first of its preferences the node has free). Among
those, a node serving an earlier GPU preference ranks first, then a caller-supplied preference ranks first (the
reconciler prefers nodes holding a compatible memory snapshot,
``snapshot_affinity.py``), then the node with the
most free cores, which spreads a function's containers so that losing one
machine loses few of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from thaw_core.gpu_names import GpuChoice, parse_request
from thaw_core.schema import NodeHeartbeat, Resources


@dataclass(frozen=True)
class NodeCapacity:
    node_id: str
    free_cores: float
    free_memory_mb: int
    # Names of the GPUs not yet given to a container.
    free_gpus: tuple[str, ...]
    # Disk for containers' writable layers, less what ephemeral disks hold.
    free_disk_mb: int = 0

    @classmethod
    def from_heartbeat(cls, hb: NodeHeartbeat) -> NodeCapacity:
        # The agent names the container each GPU is given to; a GPU in MIG
        # mode is never given whole. Containers started since the heartbeat
        # are counted by the scheduler's own reservations (see reserve()).
        free = tuple(g.name for g in hb.gpus if not g.container_id and not g.mig)
        return cls(hb.node_id, hb.free_cores, hb.free_memory_mb, free, hb.free_disk_mb)

    def reserve(self, r: Resources) -> NodeCapacity:
        """What is left after placing a container asking for ``r``."""
        gpus = list(self.free_gpus)
        choice = gpu_choice(self, r.gpu)
        for _ in range(choice.count if choice else 0):
            gpus.remove(next(g for g in gpus if choice is not None and choice.matches(g)))
        return replace(
            self,
            free_cores=self.free_cores - r.cpu,
            free_memory_mb=self.free_memory_mb - r.memory_mb,
            free_gpus=tuple(gpus),
            free_disk_mb=self.free_disk_mb - (r.ephemeral_disk_mb or 0),
        )


def gpu_choice(node: NodeCapacity, request: str | None) -> GpuChoice | None:
    """The first of the request's preferences the node's free GPUs cover."""
    for choice in parse_request(request):
        if sum(1 for g in node.free_gpus if choice.matches(g)) >= choice.count:
            return choice
    return None


def fits(node: NodeCapacity, r: Resources) -> bool:
    gpus_ok = not r.gpu or gpu_choice(node, r.gpu) is not None
    # Without ephemeral_disk a container writes to the node's disk unbounded,
    # as before: only a size asked for is placed by.
    disk_ok = node.free_disk_mb >= (r.ephemeral_disk_mb or 0)
    return node.free_cores >= r.cpu and node.free_memory_mb >= r.memory_mb and gpus_ok and disk_ok


def choose(
    nodes: Sequence[NodeCapacity],
    r: Resources,
    prefer: Callable[[NodeCapacity], int] | None = None,
) -> NodeCapacity | None:
    candidates = [n for n in nodes if fits(n, r)]
    if not candidates:
        return None
    # The request's first preference with room wins over spreading.
    choices = parse_request(r.gpu)

    def rank(n: NodeCapacity) -> tuple[int, int, float, str]:
        choice = gpu_choice(n, r.gpu)
        preference = -choices.index(choice) if choice is not None else 0
        return (preference, prefer(n) if prefer else 0, n.free_cores, n.node_id)

    return max(candidates, key=rank)
