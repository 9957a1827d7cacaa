"""The builder service's lifecycle. Image builds: content-addressed layers in the blob store.

A skeleton for now: it connects, answers health probes on ``thaw.health.builder``
and stops cleanly; later issues add its loops (``loops()``) and domain code
in other modules of this package.
"""

from __future__ import annotations

from thaw_core.service import Service


class BuilderService(Service):
    name = "builder"
    uses_db = True
    uses_blob = True
