"""Container output to ``thaw.logs.<app>.<function>`` (JetStream LOGS).

Two halves that never wait on each other:

- ``pump`` reads one of a container's pipes for as long as it is open and
  hands complete lines to the shipper. It never blocks on NATS: when the
  shipper's buffer is full the line is dropped and counted, so a container
  printing faster than NATS takes it slows nothing but its own logs.
- ``LogShipper.run`` wakes when lines are waiting (and at most every
  ``FLUSH_INTERVAL_S``), folds consecutive lines of one container stream into
  one ``LogLine`` (up to ``MAX_BATCH_CHARS``) and publishes the batches
  concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from thaw_core import contract
from thaw_core.bus import Bus
from thaw_core.schema import LogLine

log = logging.getLogger("thaw.agent.logs")

Stream = Literal["stdout", "stderr", "system"]

MAX_QUEUED_LINES = 20_000
MAX_LINE_CHARS = 16_384
MAX_BATCH_CHARS = 32_768
FLUSH_INTERVAL_S = 0.05
PUBLISH_TIMEOUT_S = 5.0
READ_CHUNK = 65_536


@dataclass(frozen=True)
class LogSource:
    app: str
    function: str
    container_id: str

    @property
    def subject(self) -> str:
        return contract.logs_subject(self.app, self.function)


class LogShipper:
    def __init__(self, bus: Bus, *, max_queued: int = MAX_QUEUED_LINES) -> None:
        self._bus = bus
        self._queue: deque[tuple[LogSource, Stream, str, float]] = deque()
        self._max_queued = max_queued
        self._wake = asyncio.Event()
        # Counters for tests and the agent's own health.
        self.dropped = 0
        self._dropped_reported = 0
        self.published = 0

    def emit(self, source: LogSource, stream: Stream, line: str) -> None:
        if len(self._queue) >= self._max_queued:
            self.dropped += 1
            return
        self._queue.append((source, stream, line[:MAX_LINE_CHARS], time.time()))
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            self._wake.clear()
            await self.flush()
            # Gather a few more lines before the next batch.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_INTERVAL_S)
        await self.flush()

    async def flush(self) -> None:
        batches = self._batches()
        if not batches:
            return
        results = await asyncio.gather(*(self._publish(b) for b in batches), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        self.published += len(batches) - len(failed)
        if failed:
            self.dropped += len(failed)
            log.debug("log batches not published: %r", failed[0])

    def _batches(self) -> list[LogLine]:
        out: list[LogLine] = []
        key: tuple[LogSource, Stream] | None = None
        lines: list[str] = []
        size = 0
        at = 0.0
        if self.dropped > self._dropped_reported:
            log.warning(
                "log lines dropped: the buffer was full or NATS refused them",
                extra={"lines": self.dropped - self._dropped_reported},
            )
            self._dropped_reported = self.dropped

        def close() -> None:
            if key is not None and lines:
                src, stream = key
                out.append(
                    LogLine(
                        app=src.app,
                        function=src.function,
                        container_id=src.container_id,
                        stream=stream,
                        line="\n".join(lines),
                        at=at,
                    )
                )

        while self._queue:
            src, stream, line, t = self._queue.popleft()
            if (src, stream) != key or size + len(line) > MAX_BATCH_CHARS:
                close()
                key, lines, size, at = (src, stream), [], 0, t
            lines.append(line)
            size += len(line) + 1
        close()
        return out

    async def _publish(self, line: LogLine) -> None:
        await asyncio.wait_for(
            self._bus.publish(contract.logs_subject(line.app, line.function), line),
            PUBLISH_TIMEOUT_S,
        )


async def pump_fd(fd: int, on_line: Callable[[str], None]) -> None:
    """``pump`` the pipe read end ``fd`` (closed when it ends)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
    )
    try:
        await pump(reader, on_line)
    finally:
        transport.close()


async def pump(
    reader: asyncio.StreamReader,
    on_line: Callable[[str], None],
) -> None:
    """Read ``reader`` until EOF, calling ``on_line`` for every line. A line
    longer than ``MAX_LINE_CHARS`` is cut into pieces rather than buffered."""
    pending = b""
    while True:
        chunk = await reader.read(READ_CHUNK)
        if not chunk:
            break
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            on_line(raw.rstrip(b"\r").decode("utf-8", "replace"))
        while len(pending) > MAX_LINE_CHARS:
            on_line(pending[:MAX_LINE_CHARS].decode("utf-8", "replace"))
            pending = pending[MAX_LINE_CHARS:]
    if pending:
        on_line(pending.decode("utf-8", "replace"))
