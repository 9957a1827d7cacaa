"""Which node a new container goes to.

A node qualifies when its free CPU, memory and GPUs cover the function's
request. Among those, a caller-supplied preference ranks first (the
reconciler prefers nodes holding a compatible memory snapshot,
``snapshot_affinity.py``), then the node with the
most free cores, which spreads a function's containers so that losing one
machine loses few of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from thaw_core.schema import NodeHeartbeat, Resources


@dataclass(frozen=True)
class NodeCapacity:
    node_id: str
    free_cores: float
    free_memory_mb: int
    # Names of the GPUs not yet given to a container.
    free_gpus: tuple[str, ...]

    @classmethod
    def from_heartbeat(cls, hb: NodeHeartbeat) -> NodeCapacity:
        # The agent reports GPUs it has; those its containers hold are not
        # reported separately yet, so a GPU container is counted by the
        # scheduler's own reservations (see reserve()).
        return cls(hb.node_id, hb.free_cores, hb.free_memory_mb, tuple(g.name for g in hb.gpus))

    def reserve(self, r: Resources) -> NodeCapacity:
        """What is left after placing a container asking for ``r``."""
        model, count = parse_gpu(r.gpu)
        gpus = list(self.free_gpus)
        for _ in range(count):
            gpus.remove(next(g for g in gpus if gpu_matches(model, g)))
        return replace(
            self,
            free_cores=self.free_cores - r.cpu,
            free_memory_mb=self.free_memory_mb - r.memory_mb,
            free_gpus=tuple(gpus),
        )


def parse_gpu(gpu: str | None) -> tuple[str | None, int]:
    """``"A10G"`` -> ("A10G", 1); ``"H100:2"`` -> ("H100", 2); None -> (None, 0)."""
    if not gpu:
        return None, 0
    model, _, count = gpu.partition(":")
    n = int(count) if count else 1
    if n < 1:
        raise ValueError(f"invalid GPU count in {gpu!r}")
    return model.strip(), n


def gpu_matches(model: str | None, name: str) -> bool:
    """A request names a model loosely ("a10g", "H100", "any"); the node
    reports NVML's full name ("NVIDIA H100 80GB HBM3")."""
    if model is None or model.lower() == "any":
        return True
    return model.lower().replace("-", " ") in name.lower().replace("-", " ")


def fits(node: NodeCapacity, r: Resources) -> bool:
    model, count = parse_gpu(r.gpu)
    matching = sum(1 for g in node.free_gpus if gpu_matches(model, g))
    return node.free_cores >= r.cpu and node.free_memory_mb >= r.memory_mb and matching >= count


def choose(
    nodes: Sequence[NodeCapacity],
    r: Resources,
    prefer: Callable[[NodeCapacity], int] | None = None,
) -> NodeCapacity | None:
    candidates = [n for n in nodes if fits(n, r)]
    if not candidates:
        return None
    return max(candidates, key=lambda n: ((prefer(n) if prefer else 0), n.free_cores, n.node_id))
