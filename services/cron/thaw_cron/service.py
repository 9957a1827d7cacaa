"""The cron service's lifecycle. Period and Cron schedules.

A skeleton for now: it connects, answers health probes on ``thaw.health.cron``
and stops cleanly; later issues add its loops (``loops()``) and domain code
in other modules of this package.
"""

from __future__ import annotations

from thaw_core.service import Service


class CronService(Service):
    name = "cron"
    uses_db = True
    uses_blob = False
