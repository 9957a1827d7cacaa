"""A build's progress and output, published on ``thaw.build.log.<build_id>``.

Output lines are buffered and published in batches (``BuildOutput``), always
before the next progress message, so a reader sees them in order. Publishing
failures are logged, never raised: a lost log line must not fail a build.

``BuildLogs`` holds the reporters of the builds running now; its ``run`` is
one of the builder service's supervised loops and flushes their output every
``OUTPUT_FLUSH_S``, or as soon as one has ``OUTPUT_BATCH_LINES`` waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from thaw_core.bus import Bus
from thaw_core.contract import build_log_subject
from thaw_core.schema import BuildOutput, BuildProgress, StepStatus, encode

from thaw_builder.plan import PlannedStep

# Output is published in batches: at most this often, or this many lines.
OUTPUT_FLUSH_S = 0.25
OUTPUT_BATCH_LINES = 200

log = logging.getLogger(__name__)


class BuildReporter:
    """One build's log publisher (``thaw_builder.build.Reporter``)."""

    def __init__(self, bus: Bus, build_id: str, full: asyncio.Event) -> None:
        self.bus = bus
        self.build_id = build_id
        self.subject = build_log_subject(build_id)
        self._pending: list[tuple[int, str, str]] = []
        self._lock = asyncio.Lock()
        # Set when a batch is full, so the flush loop does not wait out its tick.
        self._full = full

    async def progress(
        self, step: PlannedStep, status: StepStatus, *, elapsed_s: float = 0.0
    ) -> None:
        msg = BuildProgress(
            build_id=self.build_id,
            step=step.index,
            op=step.op,
            status=status,
            layer_id=step.layer_id,
            elapsed_s=elapsed_s,
        )
        async with self._lock:
            await self._flush_locked()
            await self._publish(msg)

    def output(self, step: int, stream: str, line: str) -> None:
        self._pending.append((step, stream, line))
        if len(self._pending) >= OUTPUT_BATCH_LINES:
            self._full.set()

    async def flush(self) -> None:
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        pending, self._pending = self._pending, []
        batch: list[str] = []
        key: tuple[int, str] | None = None
        for step, stream, line in pending:
            if key is not None and (step, stream) != key:
                await self._publish_lines(key, batch)
                batch = []
            key = (step, stream)
            batch.append(line)
        if key is not None and batch:
            await self._publish_lines(key, batch)

    async def _publish_lines(self, key: tuple[int, str], lines: list[str]) -> None:
        step, stream = key
        await self._publish(
            BuildOutput(
                build_id=self.build_id, step=step, stream=stream, lines=lines, at=time.time()
            )  # type: ignore[arg-type]
        )

    async def _publish(self, msg: BuildProgress | BuildOutput) -> None:
        try:
            await self.bus.publish(self.subject, encode(msg))
        except Exception as e:  # noqa: BLE001 - see the module docstring
            log.warning("could not publish build log for %s: %r", self.build_id, e)


class BuildLogs:
    """The reporters of the builds running now, and the loop that flushes them."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._running: set[BuildReporter] = set()
        self._full = asyncio.Event()

    @contextlib.asynccontextmanager
    async def reporting(self, build_id: str) -> AsyncIterator[BuildReporter]:
        """A reporter for one build; what it still holds is published on exit."""
        reporter = BuildReporter(self.bus, build_id, self._full)
        self._running.add(reporter)
        try:
            yield reporter
        finally:
            self._running.discard(reporter)
            await reporter.flush()

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush every running build's output until ``stopping`` and no build runs."""
        while not (stopping.is_set() and not self._running):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), OUTPUT_FLUSH_S)
            self._full.clear()
            await asyncio.gather(*(r.flush() for r in list(self._running)))
