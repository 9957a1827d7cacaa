"""Where a container's start goes: seconds per phase, cold or restored.

A start is timed phase by phase (the snapshot lookup, its fetch, the
rootfs changes copied, the sandbox set up, ``runc run`` or ``runc restore``
and CRIU's own share of it, the runtime's reconnect, its way to Ready) so
that the container's log and the benchmarks say where a cold start or a
restore spends its time, not only how long it took.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

# The phases in the order a start passes them (a start has only some of them).
ORDER = (
    "lookup",  # the snapshots service asked what to do
    "fetch",  # the snapshot downloaded from the blob store and unpacked as it arrives
    "digest",  # its digest written, for the checks before later restores
    "verify",  # the cached copy's digest (beside the restore; see "verify wait")
    "rootfs changes",  # the snapshot's overlay upper copied into the container's
    "sandbox",  # dirs, rootfs mount, socket, volumes, config.json
    "runc run",  # a cold start's process created
    "runc restore",  # the whole ``runc restore`` command, CRIU included
    "criu restore",  # CRIU's own share of it (from its restore.log)
    "runtime connect",  # process up to the runtime's Hello on the socket
    "to ready",  # Hello to Ready: imports and init (cold), restore hooks (restored)
    "snapshot",  # a snapshot's maker: checkpoint, changes copied, restored in place
    "verify wait",  # Ready held back for the digest check
)

# CRIU's log lines start with "(SS.ssssss)": seconds since it started.
_CRIU_STAMP = re.compile(rb"^\((\d+\.\d+)\)", re.MULTILINE)


class StartPhases:
    """Seconds per phase of one start; ``ready_at`` is ``perf_counter()`` at Ready."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        # Made with the container, when its start was requested.
        self.requested_at = time.perf_counter()
        self.ready_at = 0.0

    def cold_start_s(self) -> float:
        """Requested to Ready without the snapshot taken on the way: what a
        cold start of this function costs, to weigh its restores against
        (0.0 before Ready)."""
        if not self.ready_at:
            return 0.0
        return max(0.0, self.ready_at - self.requested_at - self.seconds.get("snapshot", 0.0))

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def add_criu_log(self, log_file: Path) -> None:
        """CRIU's own time, read from the last stamp of its log (when there)."""
        with contextlib.suppress(OSError):
            stamps = _CRIU_STAMP.findall(log_file.read_bytes())
            if stamps:
                self.add("criu restore", float(stamps[-1]))

    def summary(self) -> str:
        """Each phase's seconds, in start order: "lookup 0.002s, sandbox 0.031s, ..."."""
        return ", ".join(
            f"{name} {self.seconds[name]:.3f}s" for name in ORDER if name in self.seconds
        )
