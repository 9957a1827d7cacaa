"""The snapshots service's lifecycle. The snapshot catalogue: store, look up by fingerprint, verify, GC.

A skeleton for now: it connects, answers health probes on ``thaw.health.snapshots``
and stops cleanly; later issues add its loops (``loops()``) and domain code
in other modules of this package.
"""

from __future__ import annotations

from thaw_core.service import Service


class SnapshotsService(Service):
    name = "snapshots"
    uses_db = True
    uses_blob = True
