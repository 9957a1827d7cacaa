"""Runs user code and turns what it did into an ``Output`` (its outcome).

Coroutine and async-generator functions run on the event loop. Sync ones run
in a thread, never on the loop: on the reader thread that received the input
(:meth:`Executor.run_here`, the hot path), or on a pool of threads made at
start (hooks, and inputs that had to wait for the loop first). Either way the
whole input (decode, call, encode, reply) runs in that thread: a large pickle
never blocks the loop, and the result goes out without waiting for it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import GeneratorType
from typing import Any, NamedTuple

from thaw_core.container_protocol import Output, RunInput
from thaw_core.schema import CallStatus

from thaw._env import CALL_ID
from thaw.runtime.codec import decode_args, encode_value
from thaw.runtime.failure import describe
from thaw.runtime.log import log
from thaw.runtime.payload_files import args_of, value_fields

# Called once per input with its outcome, from the loop or a worker thread.
Reply = Callable[[Output], None]

# A cancelled sync input keeps its thread until it returns (Python cannot stop
# a thread): spare threads let new inputs run meanwhile.
SPARE_THREADS = 8


class Callee(NamedTuple):
    """One callable an input can name, classified once at load."""

    fn: Callable[..., Any]
    # Coroutine and async-generator functions run on the event loop.
    on_loop: bool
    # "module.qualname", for the errors a caller reads.
    name: str


def callee(fn: Callable[..., Any], name: str) -> Callee:
    return Callee(fn, inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn), name)


def outcome(input_id: str, status: CallStatus, started_at: float, **fields: Any) -> Output:
    """How the input ``input_id`` ended, as the agent is told."""
    return Output(input_id=input_id, status=status, started_at=started_at, **fields)


class _Unsettled(NamedTuple):
    """A sync function returned a coroutine or an async generator (a wrapped
    async function): the loop finishes it."""

    value: Any


def _call(run: RunInput, target: Callee, instance: object | None) -> Any:
    # Set in the input's own task (on the loop) or reset by _run_in_thread.
    CALL_ID.set(run.call_id or None)
    args, kwargs = decode_args(run.codec, args_of(run))
    if instance is None:
        return target.fn(*args, **kwargs)
    return target.fn(instance, *args, **kwargs)


def _needs_loop(value: Any) -> bool:
    return inspect.isawaitable(value) or inspect.isasyncgen(value)


async def _resolved(value: Any) -> Any:
    """What a call returned, with a coroutine awaited and an async generator
    drained into a list."""
    if inspect.isasyncgen(value):
        return [item async for item in value]
    if inspect.isawaitable(value):
        return await value
    return value


def our_cancellation(e: BaseException) -> bool:
    """A CancelledError meant for the runtime's task (cancel, shutdown), not
    one the user's code raised or let escape from its own tasks."""
    if not isinstance(e, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Executor:
    def __init__(self, max_inputs: int, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pool = ThreadPoolExecutor(
            max_workers=max_inputs + SPARE_THREADS, thread_name_prefix="thaw-input"
        )

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a hook or constructor where it belongs; its exception propagates."""
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            return await _resolved(fn(*args))
        value = await self._loop.run_in_executor(self._pool, fn, *args)
        return await _resolved(value)

    async def run(
        self, run: RunInput, target: Callee, instance: object | None, reply: Reply
    ) -> None:
        """Run one input and ``reply`` with its outcome, from the thread that
        finished it. Raises nothing but the runtime's own cancellation."""
        started_at = time.time()
        if target.on_loop:
            reply(await self._run_on_loop(run, target, instance, started_at))
            return
        unsettled = await self._loop.run_in_executor(
            self._pool, self._run_in_thread, run, target, instance, started_at, reply
        )
        if unsettled is not None:
            reply(await self._finish_on_loop(run, target, unsettled.value, started_at))

    def run_here(
        self, run: RunInput, target: Callee, instance: object | None, reply: Reply
    ) -> None:
        """Run a sync input in the calling thread (not the loop's)."""
        started_at = time.time()
        unsettled = self._run_in_thread(run, target, instance, started_at, reply)
        if unsettled is not None:

            async def finish(value: Any) -> None:
                reply(await self._finish_on_loop(run, target, value, started_at))

            asyncio.run_coroutine_threadsafe(finish(unsettled.value), self._loop)

    def _run_in_thread(
        self,
        run: RunInput,
        target: Callee,
        instance: object | None,
        started_at: float,
        reply: Reply,
    ) -> _Unsettled | None:
        token = CALL_ID.set(None)  # the thread serves other inputs after this one
        try:
            value = _call(run, target, instance)
            if isinstance(value, GeneratorType):
                value = list(value)
            elif _needs_loop(value):
                return _Unsettled(value)
            done = self.success(run, target, value, started_at)
        except BaseException as e:  # noqa: BLE001 - SystemExit in user code fails the input, not the runtime
            done = self.failure(run, e, started_at)
        finally:
            CALL_ID.reset(token)
        reply(done)
        return None

    async def _run_on_loop(
        self, run: RunInput, target: Callee, instance: object | None, started_at: float
    ) -> Output:
        try:
            value = _call(run, target, instance)  # a coroutine or an async generator
        except BaseException as e:  # noqa: BLE001 - bad arguments, as in _run_in_thread
            return self.failure(run, e, started_at)
        return await self._finish_on_loop(run, target, value, started_at)

    async def _finish_on_loop(
        self, run: RunInput, target: Callee, value: Any, started_at: float
    ) -> Output:
        try:
            return self.success(run, target, await _resolved(value), started_at)
        except BaseException as e:
            if our_cancellation(e):
                raise
            return self.failure(run, e, started_at)

    # ------------------------------------------------------------ outcomes

    def success(self, run: RunInput, target: Callee, value: Any, started_at: float) -> Output:
        encoded = encode_value(run.codec, value, target.name)
        return outcome(run.input_id, "success", started_at, **value_fields(run.input_id, encoded))

    def failure(self, run: RunInput, exc: BaseException, started_at: float) -> Output:
        failure = describe(exc)
        # The container's log shows it too, as a local run would print it.
        log.error("input %s failed:\n%s", run.input_id, failure.traceback.rstrip())
        return outcome(
            run.input_id,
            "failure",
            started_at,
            exc=failure.exc,
            error=failure.error,
            traceback=failure.traceback,
        )
