"""Results of calls, as they arrive and as they were stored.

One core subscription on ``thaw.result.>`` feeds every request that waits
for a result: a waiter is registered *before* its input is published (or its
stored result is looked up), so a result can never slip between the two. A
result nobody here waits for costs one dict lookup. Results that arrived
while nobody waited (another replica's calls, a poll after a restart) are read
back from the RESULTS stream by subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import msgspec
import nats.js.errors
from thaw_core.api import CallResult
from thaw_core.bus import Bus
from thaw_core.schema import Result, result_subject

log = logging.getLogger("thaw.gateway")

RESULTS_STREAM = "RESULTS"
_PREFIX = "thaw.result."
# How many stored results one request looks up at once.
_LOOKUP_CONCURRENCY = 64

_result_decoder = msgspec.json.Decoder(Result)
_value_decoder = msgspec.json.Decoder()


class MalformedResult(Exception):
    """What was published as a call's result is not a ``Result``."""

    def __init__(self, call_id: str, error: str) -> None:
        super().__init__(f"the result stored for call {call_id} is malformed: {error}")
        self.call_id = call_id


Outcome = Result | MalformedResult
Watcher = Callable[[Outcome], None]
# service.reject(subject, payload, code, error)
Reject = Callable[[str, bytes, str, str], Awaitable[None]]


def decode_result(call_id: str, data: bytes) -> Outcome:
    try:
        result = _result_decoder.decode(data)
    except msgspec.DecodeError as e:
        return MalformedResult(call_id, str(e))
    if result.call_id != call_id:
        return MalformedResult(call_id, f"it names call {result.call_id!r}")
    return result


def to_call_result(r: Result) -> CallResult:
    """The HTTP view of a result. The json codec's value is JSON again; pickle
    bytes pass through as base64, never unpickled here."""
    value: Any = None
    value_b64 = r.value
    error = r.error
    if r.codec == "json":
        value_b64 = b""
        if r.value:
            try:
                value = _value_decoder.decode(r.value)
            except msgspec.DecodeError as e:
                error = (error + "; " if error else "") + f"result value is not valid JSON: {e}"
    return CallResult(
        call_id=r.call_id,
        status=r.status,
        codec=r.codec,
        value=value,
        value_b64=value_b64,
        exc_b64=r.exc,
        error=error,
        traceback=r.traceback,
        attempts=r.attempts,
        map_id=r.map_id,
        index=r.index,
    )


class ResultHub:
    def __init__(self, bus: Bus, reject: Reject) -> None:
        self.bus = bus
        self._reject = reject
        self._watchers: dict[str, list[Watcher]] = {}
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self.bus.nc.subscribe(_PREFIX + ">", cb=self._on_message)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    @property
    def waiting(self) -> int:
        return len(self._watchers)

    async def _on_message(self, msg: Any) -> None:
        call_id = msg.subject[len(_PREFIX) :]
        watchers = self._watchers.get(call_id)
        if not watchers:
            return
        outcome = decode_result(call_id, msg.data)
        if isinstance(outcome, MalformedResult):
            await self._reject(msg.subject, msg.data, "malformed", str(outcome))
        for watch in list(watchers):
            watch(outcome)

    # ------------------------------------------------------------ waiting

    def watch(self, call_id: str, watcher: Watcher) -> None:
        self._watchers.setdefault(call_id, []).append(watcher)

    def unwatch(self, call_id: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(call_id)
        if watchers is None:
            return
        with contextlib.suppress(ValueError):
            watchers.remove(watcher)
        if not watchers:
            del self._watchers[call_id]

    @contextlib.contextmanager
    def expect(self, call_id: str) -> Iterator[asyncio.Future[Result]]:
        """A future for the next result of ``call_id``; enter before publishing."""
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

        def settle(outcome: Outcome) -> None:
            if fut.done():
                return
            if isinstance(outcome, MalformedResult):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)

        self.watch(call_id, settle)
        try:
            yield fut
        finally:
            self.unwatch(call_id, settle)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved, so an unawaited failure is not logged

    @contextlib.contextmanager
    def expect_many(self, call_ids: Iterable[str]) -> Iterator[asyncio.Queue[Outcome]]:
        """One queue that every result of ``call_ids`` is put on as it arrives."""
        queue: asyncio.Queue[Outcome] = asyncio.Queue()
        ids = list(call_ids)
        for cid in ids:
            self.watch(cid, queue.put_nowait)
        try:
            yield queue
        finally:
            for cid in ids:
                self.unwatch(cid, queue.put_nowait)

    # ------------------------------------------------------------ stored results

    async def stored(self, call_id: str) -> Outcome | None:
        """The result stored in RESULTS for ``call_id``, or None if there is none."""
        try:
            raw = await self.bus.js.get_last_msg(RESULTS_STREAM, result_subject(call_id))
        except nats.js.errors.NotFoundError:
            return None
        return decode_result(call_id, raw.data or b"")

    async def stored_many(self, call_ids: list[str]) -> dict[str, Outcome]:
        found: dict[str, Outcome] = {}
        gate = asyncio.Semaphore(_LOOKUP_CONCURRENCY)

        async def one(cid: str) -> None:
            async with gate:
                outcome = await self.stored(cid)
            if outcome is not None:
                found[cid] = outcome

        async with asyncio.TaskGroup() as tg:
            for cid in call_ids:
                tg.create_task(one(cid))
        return found
