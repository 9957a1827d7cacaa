"""``@thaw.batched`` in the container: each input's call waits in a batch;
the user's function is called once per batch, with one list per parameter,
and each input gets its own element of the list it returns.

The batch goes out when it holds ``max_batch_size`` inputs, or ``wait_ms``
after its first input came, whichever is first. An exception of the call,
or a result that is not a list as long as the batch, fails every input of
that batch. A sync function runs in a thread, an async one on the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Callable
from typing import Any

from thaw_core.schema import BatchSpec

from thaw.exception import InvalidError
from thaw.runtime.executor import Callee


class _Waiting:
    __slots__ = ("arguments", "result")

    def __init__(self, arguments: dict[str, Any], result: asyncio.Future[Any]) -> None:
        self.arguments = arguments
        self.result = result


class Batcher:
    """Gathers the inputs of one batched function; lives on the event loop."""

    def __init__(self, fn: Callable[..., Any], name: str, batch: BatchSpec) -> None:
        self._fn = fn
        self._name = name
        self._size = batch.max_batch_size
        self._wait_s = batch.wait_ms / 1000
        self._signature = inspect.signature(fn)
        self._waiting: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, *args: Any, **kwargs: Any) -> Any:
        """One input's call: its element of its batch's result."""
        bound = self._signature.bind(*args, **kwargs)  # a TypeError fails this input alone
        bound.apply_defaults()
        loop = asyncio.get_running_loop()
        waiting = _Waiting(dict(bound.arguments), loop.create_future())
        self._waiting.append(waiting)
        if len(self._waiting) >= self._size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._wait_s, self._flush)
        return await waiting.result

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting[: self._size], self._waiting[self._size :]
        if self._waiting:
            self._timer = asyncio.get_running_loop().call_later(self._wait_s, self._flush)
        # An input cancelled while it waited is no part of the batch.
        batch = [w for w in batch if not w.result.done()]
        if batch:
            task = asyncio.create_task(self._run(batch), name=f"thaw-batch-{self._name}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            values = await self._call(batch)
            if not isinstance(values, (list, tuple)) or len(values) != len(batch):
                got = (
                    f"{len(values)} results" if isinstance(values, (list, tuple)) else repr(values)
                )
                raise InvalidError(
                    f"@thaw.batched function {self._name} must return a list of "
                    f"{len(batch)} results (one per input of the batch), got {got}"
                )
        except BaseException as e:  # each caller of the batch gets it
            for waiting in batch:
                if not waiting.result.done():
                    waiting.result.set_exception(e)
            if isinstance(e, asyncio.CancelledError):
                raise
            return
        for waiting, value in zip(batch, values, strict=True):
            if not waiting.result.done():
                waiting.result.set_result(value)

    async def _call(self, batch: list[_Waiting]) -> Any:
        args: list[list[Any]] = []
        kwargs: dict[str, list[Any]] = {}
        for param in self._signature.parameters.values():
            column = [w.arguments[param.name] for w in batch]
            if param.kind is param.KEYWORD_ONLY:
                kwargs[param.name] = column
            else:
                args.append(column)
        if inspect.iscoroutinefunction(self._fn):
            return await self._fn(*args, **kwargs)
        value = await asyncio.to_thread(self._fn, *args, **kwargs)
        return await value if inspect.isawaitable(value) else value


def marked_batch(fn: Callable[..., Any]) -> BatchSpec | None:
    """The ``@thaw.batched`` marker a method carries in the user's code."""
    marker = getattr(fn, "__thaw_batched__", None)
    return None if marker is None else BatchSpec(**marker)


def batched_method(target: Callee, batch: BatchSpec | None) -> Callee:
    """A method as its inputs call it: one batcher per instance, since a
    batch is one call on one instance."""
    if batch is None:
        return target
    batchers: dict[int, tuple[object, Batcher]] = {}

    async def submit(instance: object, *args: Any, **kwargs: Any) -> Any:
        entry = batchers.get(id(instance))
        if entry is None or entry[0] is not instance:
            bound = types.MethodType(target.fn, instance)
            entry = batchers[id(instance)] = (instance, Batcher(bound, target.name, batch))
        return await entry[1].submit(*args, **kwargs)

    return Callee(submit, True, target.name)


def batched_callee(target: Callee, batch: BatchSpec | None) -> Callee:
    """``target`` as its inputs call it: through a batcher when it is batched."""
    if batch is None:
        return target
    return Callee(Batcher(target.fn, target.name, batch).submit, True, target.name)
