"""Where a snapshot-enabled function's next container should go.

DESIGN.md: prefer a node that holds a compatible snapshot in its local cache
(restore without a download), then a node compatible with a snapshot in the
blob store (restore after a download), then any node (cold start).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from thaw_core.fingerprint import compatible
from thaw_core.schema import Fingerprint, NodeHeartbeat

from thaw_scheduler.placement import NodeCapacity

CACHED, COMPATIBLE, ANY = 2, 1, 0


@dataclass(frozen=True)
class ReadySnapshot:
    snapshot_id: str
    fingerprint: Fingerprint
    # False: "unhelpful" (restores no faster than a cold start): never
    # restored, so no reason to prefer a node for it.
    helps: bool = True


def preference(
    snapshots: Sequence[ReadySnapshot], nodes: Mapping[str, NodeHeartbeat]
) -> Callable[[NodeCapacity], int]:
    def rank(node: NodeCapacity) -> int:
        hb = nodes.get(node.node_id)
        if hb is None or hb.fingerprint is None:
            return ANY
        usable = [s for s in snapshots if s.helps and compatible(s.fingerprint, hb.fingerprint)]
        if any(s.snapshot_id in hb.cached_snapshots for s in usable):
            return CACHED
        return COMPATIBLE if usable else ANY

    return rank
