"""One background event loop per process, so that the sync API (``.remote()``)
works from plain scripts, from threads and from inside a running loop alike,
and every call shares one keep-alive HTTP session.

``@aio_method`` turns an ``async def`` method into ``obj.m(...)`` (blocks until
done) plus ``obj.m.aio(...)`` (awaitable from any event loop); ``@aio_iterator``
does the same for an async generator (``for x in obj.m(...)`` /
``async for x in obj.m.aio(...)``). asyncio is imported on first use only:
containers import thaw without ever calling out.
"""

from __future__ import annotations

import functools
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")

# How many items an iterator runs ahead of the code consuming it.
ITER_WINDOW = 1024
# Consumed items are handed back to the window this many at a time: each
# hand-back wakes the loop's thread (a write to its self-pipe), too much to
# do for every item of a long map. At most the window, or the pump could
# wait for credits the consumer holds back.
CREDIT_BATCH = 64


class BackgroundLoop:
    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name="thaw-client", daemon=True)
        self.thread.start()

    def _main(self) -> None:
        import asyncio

        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def in_loop(self) -> bool:
        return threading.current_thread() is self.thread

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it (Ctrl-C cancels it)."""
        import asyncio

        if self.in_loop():
            coro.close()
            raise RuntimeError(
                "a blocking thaw call was made from thaw's own event loop; use .aio()"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` from any event loop; it runs on this one."""
        import asyncio

        if asyncio.get_running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """A blocking iterator over an async iterator that runs on the loop."""
        import asyncio

        if self.in_loop():
            raise RuntimeError(
                "a blocking thaw iterator was used from thaw's own event loop; use .aio()"
            )
        items: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        credits = asyncio.Semaphore(ITER_WINDOW)
        future = asyncio.run_coroutine_threadsafe(_pump(agen, credits, items.put), self.loop)
        owed = 0  # items consumed and not yet handed back
        try:
            while True:
                more, item = items.get()
                if not more:
                    if item is not None:
                        raise item
                    return
                owed += 1
                if owed == CREDIT_BATCH:
                    self.loop.call_soon_threadsafe(_release, credits, owed)
                    owed = 0
                yield item
        finally:
            future.cancel()

    async def aiterate(self, agen: AsyncIterator[T]) -> AsyncIterator[T]:
        """An async iterator, on the caller's loop, over one that runs on this loop."""
        import asyncio

        here = asyncio.get_running_loop()
        if here is self.loop:
            async for item in agen:
                yield item
            return
        items: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        credits = asyncio.Semaphore(ITER_WINDOW)

        def put(entry: tuple[bool, Any]) -> None:
            here.call_soon_threadsafe(items.put_nowait, entry)

        future = asyncio.run_coroutine_threadsafe(_pump(agen, credits, put), self.loop)
        owed = 0  # items consumed and not yet handed back
        try:
            while True:
                more, item = await items.get()
                if not more:
                    if item is not None:
                        raise item
                    return
                owed += 1
                if owed == CREDIT_BATCH:
                    self.loop.call_soon_threadsafe(_release, credits, owed)
                    owed = 0
                yield item
        finally:
            future.cancel()


def _release(credits: asyncio.Semaphore, n: int) -> None:
    for _ in range(n):
        credits.release()


async def _pump(
    agen: AsyncIterator[Any], credits: asyncio.Semaphore, put: Callable[[tuple[bool, Any]], None]
) -> None:
    """Move items out of ``agen`` to another thread, at most ``ITER_WINDOW`` ahead;
    then ``(False, None)``, or ``(False, exc)`` when it raised."""
    try:
        async for item in agen:
            await credits.acquire()
            put((True, item))
    except Exception as e:  # noqa: BLE001 - every failure goes to the consumer, which raises it
        put((False, e))
    else:
        put((False, None))
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()


_loop: BackgroundLoop | None = None
_loop_lock = threading.Lock()


def background_loop() -> BackgroundLoop:
    global _loop
    if _loop is None:
        with _loop_lock:
            if _loop is None:
                _loop = BackgroundLoop()
    return _loop


def started_loop() -> BackgroundLoop | None:
    """The loop if this process has started it, without starting one."""
    return _loop


def _forget_loop_after_fork() -> None:
    # The thread does not survive a fork; the child makes its own on first use.
    global _loop, _loop_lock
    _loop = None
    _loop_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_loop_after_fork)


# ---------------------------------------------------------------- descriptors


class _Dual:
    """One operation in its two forms: blocking (``x(...)``) and for event loops
    (``x.aio(...)``). ``make`` builds the coroutine (or, with ``iterator``, the
    async iterator) that runs on the background loop."""

    __slots__ = ("_iterator", "_make")

    def __init__(self, make: Callable[..., Any], iterator: bool) -> None:
        self._make = make
        self._iterator = iterator

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        loop = background_loop()
        made = self._make(*args, **kwargs)
        return loop.iterate(made) if self._iterator else loop.run(made)

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        loop = background_loop()
        made = self._make(*args, **kwargs)
        return loop.aiterate(made) if self._iterator else loop.run_async(made)


class aio_method:
    """An ``async def`` method, used as ``obj.m(...)`` or ``await obj.m.aio(...)``."""

    _iterator = False

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self if obj is None else _Dual(functools.partial(self._fn, obj), self._iterator)


class aio_iterator(aio_method):
    """A method returning an async iterator, used as ``for x in obj.m(...)`` or
    ``async for x in obj.m.aio(...)``."""

    _iterator = True


def aio_function(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Any:
    """A module-level ``async def``, used as ``f(...)`` or ``await f.aio(...)``."""
    return _Dual(fn, iterator=False)
