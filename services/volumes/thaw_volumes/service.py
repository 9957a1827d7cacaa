"""The volumes service's lifecycle. Volume versions, commit and reload.

A skeleton for now: it connects, answers health probes on ``thaw.health.volumes``
and stops cleanly; later issues add its loops (``loops()``) and domain code
in other modules of this package.
"""

from __future__ import annotations

from thaw_core.service import Service


class VolumesService(Service):
    name = "volumes"
    uses_db = True
    uses_blob = True
