"""Background tasks that outlive the call that started them, supervised.

A ``Background`` holds a service's (or one of its parts') tasks: each is kept
referenced until it ends, a crash is logged rather than lost, and ``close``
waits for them up to a bound, then cancels what is left, so that a shutdown
says how long it may take.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class Background:
    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._log.error(
                "background task crashed", extra={"task": task.get_name()}, exc_info=exc
            )

    def _others(self) -> list[asyncio.Task[Any]]:
        # A task closing its own group cannot wait for itself.
        me = asyncio.current_task()
        return [t for t in self._tasks if t is not me]

    async def wait(self, timeout_s: float) -> None:
        """Until every task ended, or ``timeout_s`` passed."""
        tasks = self._others()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    async def close(self, timeout_s: float, cancel_wait_s: float = 0.0) -> None:
        """Wait up to ``timeout_s``, cancel what is left, and give the cancelled
        tasks ``cancel_wait_s`` to unwind."""
        tasks = self._others()
        if not tasks:
            return
        try:
            _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        except asyncio.CancelledError:
            # The caller's own bound ran out first (a shutdown's wait_for over
            # a teardown): the tasks must not outlive the connections they use.
            for t in tasks:
                t.cancel()
            raise
        for t in pending:
            t.cancel()
        if pending and cancel_wait_s > 0:
            await asyncio.wait(pending, timeout=cancel_wait_s)
