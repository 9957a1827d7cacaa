"""The volumes service's lifecycle.

The process connects to NATS, Postgres and the blob store, answers health
probes on ``thaw.health.volumes`` and stops cleanly; it runs no loops and
handles no messages.
"""

from __future__ import annotations

from thaw_core.service import Service


class VolumesService(Service):
    name = "volumes"
    uses_db = True
    uses_blob = True
