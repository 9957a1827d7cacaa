"""Background tasks (thaw_core.tasks): ``close`` bounds a shutdown, and a
close cut short by its caller's own bound cancels what it waited for."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from thaw_core.tasks import Background


async def test_a_close_cut_short_by_its_caller_cancels_the_tasks() -> None:
    tasks = Background(logging.getLogger("test"))
    stopped = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    task = tasks.spawn(forever(), "forever")
    with contextlib.suppress(TimeoutError):
        # A shutdown giving its teardown less time than the close would wait.
        await asyncio.wait_for(tasks.close(timeout_s=60.0), timeout=0.05)
    await asyncio.wait_for(stopped.wait(), timeout=5)
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled() and len(tasks) == 0


async def test_close_waits_then_cancels_what_is_left() -> None:
    tasks = Background(logging.getLogger("test"))
    quick = tasks.spawn(asyncio.sleep(0), "quick")
    stuck = tasks.spawn(asyncio.Event().wait(), "stuck")
    await tasks.close(timeout_s=0.05, cancel_wait_s=5.0)
    assert quick.done() and not quick.cancelled() and stuck.cancelled()
