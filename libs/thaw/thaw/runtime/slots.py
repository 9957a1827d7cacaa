"""The container's ``max_inputs`` slots, shared by inputs run on reader
threads and inputs run from the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections import deque


class Slots:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._free = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def open(self, count: int) -> None:
        """Make ``count`` slots available (at Ready)."""
        for _ in range(count):
            self.release()

    def try_acquire(self) -> bool:
        """From any thread; never waits."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            return False

    async def acquire(self) -> None:
        """On the loop; waits its turn behind inputs already waiting."""
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    raise
            if not waiter.cancelled():
                self.release()  # granted just before the cancel: pass the slot on
            # (a waiter cancelled while its grant was on its way: _grant passes it on)
            raise

    def release(self) -> None:
        """From any thread."""
        with self._lock:
            if not self._waiters:
                self._free += 1
                return
            waiter = self._waiters.popleft()
        self._loop.call_soon_threadsafe(self._grant, waiter)

    def _grant(self, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled():
            self.release()
        else:
            waiter.set_result(None)
