"""Whether any node of the fleet could ever run a function, and if none can,
why: a GPU no node has, more CPUs, memory or ephemeral disk than any node
has in all.

A busy fleet is not "nowhere": a request some node could run once its
containers go just waits. The gateway warns at deploy with this
(``DeployResponse.warnings``) and says it to a caller whose call waits
(``CallAccepted.waiting_for``); the scheduler logs it once per change and
fails such a function's inputs after the pending limit
(``THAW_PENDING_LIMIT_S``, default 300 s).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from thaw_core.gpu_names import parse_request
from thaw_core.schema import GpuInfo, NodeHeartbeat, Resources

PENDING_LIMIT_ENV = "THAW_PENDING_LIMIT_S"
DEFAULT_PENDING_LIMIT_S = 300.0


def pending_limit_s() -> float:
    """How long an input of a function no node can run waits before it fails."""
    text = os.environ.get(PENDING_LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_PENDING_LIMIT_S
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{PENDING_LIMIT_ENV}={text!r}: give a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{PENDING_LIMIT_ENV}={text!r}: must be more than 0 seconds")
    return value


@dataclass(frozen=True)
class NodeOffer:
    """What one node has in all (not what is free now)."""

    node_id: str
    cores: float
    memory_mb: int
    gpus: tuple[str, ...] = ()  # NVML model names; a MIG-mode GPU is never given whole
    # The size of the disk for containers' writable layers.
    disk_mb: int = 0

    @classmethod
    def of(
        cls,
        node_id: str,
        cores: float,
        memory_mb: int,
        gpus: Sequence[GpuInfo],
        disk_mb: int = 0,
    ) -> NodeOffer:
        return cls(node_id, cores, memory_mb, tuple(g.name for g in gpus if not g.mig), disk_mb)

    @classmethod
    def from_heartbeat(cls, hb: NodeHeartbeat) -> NodeOffer:
        return cls.of(hb.node_id, hb.cores, hb.memory_mb, hb.gpus, hb.disk_mb)

    def could_run(self, r: Resources) -> bool:
        if r.cpu > self.cores or r.memory_mb > self.memory_mb:
            return False
        if (r.ephemeral_disk_mb or 0) > self.disk_mb:
            return False
        choices = parse_request(r.gpu)
        return not choices or any(
            sum(1 for g in self.gpus if c.matches(g)) >= c.count for c in choices
        )

    def describe(self) -> str:
        gpus = Counter(self.gpus)
        gpu_text = ", ".join(f"{n}x {name}" for name, n in sorted(gpus.items())) or "no GPU"
        # Disk is 0 only in a heartbeat of an agent older than ephemeral_disk.
        disk_text = f", {self.disk_mb} MiB of disk" if self.disk_mb else ""
        return f"{self.node_id}: {self.cores:g} CPUs, {self.memory_mb} MiB, {gpu_text}{disk_text}"


def describe_request(r: Resources) -> str:
    parts = [f"cpu={r.cpu:g}", f"memory={r.memory_mb} MiB"]
    if r.gpu:
        parts.append(f"gpu={r.gpu}")
    if r.ephemeral_disk_mb:
        parts.append(f"ephemeral_disk={r.ephemeral_disk_mb} MiB")
    return ", ".join(parts)


def why_nowhere(r: Resources, nodes: Sequence[NodeOffer]) -> str | None:
    """Why no node of ``nodes`` could ever run a container asking for ``r``;
    None when one could (or when there are no nodes to judge by)."""
    if not nodes or any(n.could_run(r) for n in nodes):
        return None
    offers = "; ".join(n.describe() for n in nodes)
    return f"no node can run {describe_request(r)} (nodes offer: {offers})"
