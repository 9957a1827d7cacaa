"""Memory snapshots made at deploy, before the first call.

For each deployed (not ephemeral: ``thaw run`` makes none) function with
``enable_memory_snapshot``, every fingerprint class among the live nodes that
no ready snapshot serves gets one: a node of that class is asked for a
"snapshot then stop" container (``StartContainer.snapshot_only``), which
claims the snapshot in the catalog, starts cold, checkpoints and stops. The
first call then restores instead of paying the cold start.

A class is covered as ``thaw_core.snapshot_coverage`` says. An
ask is repeated only after ``RETRY_S``: the catalog's claim decides between
an ask and a cold start claiming at once, and a creation that keeps failing
gets no claim (the catalog's backoff), so a retry costs a cold start at most.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from thaw_core.fingerprint import fingerprint_id
from thaw_core.schema import NodeHeartbeat, Resources
from thaw_core.snapshot_coverage import uncovered

from thaw_scheduler.placement import NodeCapacity, choose
from thaw_scheduler.snapshot_affinity import ReadySnapshot

# Long enough for a heavy cold start plus checkpoint and upload on a busy node.
RETRY_S = 300.0

SnapshotKey = tuple[str, str, int]  # (app, function, version)


@dataclass(frozen=True)
class Ask:
    """Ask ``node_id`` for a snapshot of the function version ``key``."""

    key: SnapshotKey
    fingerprint_class: str
    node_id: str


def classes(nodes: Iterable[NodeHeartbeat]) -> dict[str, list[NodeHeartbeat]]:
    """Live nodes by fingerprint class (nodes without a fingerprint make no snapshot)."""
    out: dict[str, list[NodeHeartbeat]] = defaultdict(list)
    for hb in nodes:
        if hb.fingerprint is not None:
            out[fingerprint_id(hb.fingerprint)].append(hb)
    return out


@dataclass
class DeploySnapshots:
    clock: Callable[[], float] = time.time
    # When each (function version, class) was last asked for.
    _asked: dict[tuple[SnapshotKey, str], float] = field(default_factory=dict)

    def asks(
        self,
        wanted: Iterable[tuple[SnapshotKey, Resources]],
        snapshots: Mapping[SnapshotKey, list[ReadySnapshot]],
        nodes: Iterable[NodeHeartbeat],
    ) -> list[Ask]:
        """The asks to make now: one node per uncovered class and function,
        where it has room (none now: asked again at a later refresh)."""
        now = self.clock()
        live = list(nodes)
        by_class = classes(live)
        representatives = {
            cls: hbs[0].fingerprint for cls, hbs in by_class.items() if hbs[0].fingerprint
        }
        capacity = {hb.node_id: NodeCapacity.from_heartbeat(hb) for hb in live}
        out: list[Ask] = []
        keys: set[tuple[SnapshotKey, str]] = set()
        for key, resources in wanted:
            ready = (s.fingerprint for s in snapshots.get(key, []))
            for cls in uncovered(ready, representatives):
                keys.add((key, cls))
                if now - self._asked.get((key, cls), float("-inf")) < RETRY_S:
                    continue
                node = choose([capacity[hb.node_id] for hb in by_class[cls]], resources)
                if node is None:
                    continue
                capacity[node.node_id] = node.reserve(resources)
                self._asked[(key, cls)] = now
                out.append(Ask(key, cls, node.node_id))
        # Forget what is covered or no longer deployed: memory stays bounded.
        for k in self._asked.keys() - keys:
            del self._asked[k]
        return out
