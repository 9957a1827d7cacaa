"""Results of calls, as they arrive and as they were stored.

One core subscription on ``thaw.result.>`` feeds every request that waits
for a result: a waiter is registered *before* its input is published (or its
stored result is looked up), so a result can never slip between the two. A
result nobody here waits for costs one dict lookup.

Results of calls issued through this gateway are also kept for a while in
memory, and a call issued here whose result has not come through the
subscription (while the connection stayed up) is known to be unfinished: for
those, answering needs no round trip to JetStream, which is what lets
``calls:stream`` follow a 10,000-call map without 10,000 lookups. Anything
else (another replica's calls, a poll after a restart or a reconnect) is read
back from the RESULTS stream by subject. A waiter that gives up still looks
the result up once, so a result missed for any reason is never hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec
from thaw_core import contract
from thaw_core.api import CallResult
from thaw_core.bus import Bus
from thaw_core.contract import result_subject
from thaw_core.refusal import Reject
from thaw_core.schema import Result

log = logging.getLogger("thaw.gateway")

# How many stored results one request looks up at once.
_LOOKUP_CONCURRENCY = 64
# Calls issued here that are tracked, and results of theirs kept in memory.
_ISSUED_MAX = 200_000
_SEEN_MAX = 100_000
_SEEN_MAX_BYTES = 64 * 1024 * 1024

_result_decoder = msgspec.json.Decoder(Result)
_value_decoder = msgspec.json.Decoder()


class MalformedResult(Exception):
    """What was published as a call's result is not a ``Result``."""

    def __init__(self, call_id: str, error: str) -> None:
        super().__init__(f"the result stored for call {call_id} is malformed: {error}")
        self.call_id = call_id


class GatewayStopping(Exception):
    """The gateway shuts down: a waiting request answers "not finished yet"."""


Outcome = Result | MalformedResult
Watcher = Callable[[Outcome | Exception], None]


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
        exc=r.exc,
        error=error,
        traceback=r.traceback,
        attempts=r.attempts,
        map_id=r.map_id,
        index=r.index,
        container_id=r.container_id,
        started_at=r.started_at,
        finished_at=r.finished_at,
    )


class ResultHub:
    def __init__(self, bus: Bus, reject: Reject) -> None:
        self.bus = bus
        self._reject = reject
        self._watchers: dict[str, list[Watcher]] = {}
        # call id -> connection epoch when it was issued here
        self._issued: OrderedDict[str, int] = OrderedDict()
        # call id -> its first result (the one RESULTS keeps: later ones are
        # deduplicated there by msg-id, but still reach core subscribers)
        self._seen: OrderedDict[str, tuple[Outcome, int]] = OrderedDict()
        self._seen_bytes = 0
        self._sub: Any = None

    async def start(self) -> None:
        # No pending limits: a dropped result would leave a waiter hanging
        # until its timeout, and the callback is cheap enough to keep up.
        self._sub = await self.bus.subscribe(
            contract.all_of(contract.RESULT), self._on_message, unbounded=True
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    def release_waiters(self) -> None:
        """Shutting down: every waiting request answers now (202, poll again)."""
        stopping = GatewayStopping()
        for watchers in list(self._watchers.values()):
            for watch in list(watchers):
                watch(stopping)

    @property
    def waiting(self) -> int:
        return len(self._watchers)

    def _epoch(self) -> int:
        """Changes whenever the subscription may have missed results."""
        return self.bus.reconnects

    async def _on_message(self, msg: Any) -> None:
        call_id = contract.call_id_of_result_subject(msg.subject)
        watchers = self._watchers.get(call_id)
        if not watchers and call_id not in self._issued:
            return
        outcome = decode_result(call_id, msg.data)
        if isinstance(outcome, MalformedResult):
            await self._reject(msg.subject, msg.data, "malformed", str(outcome))
        if call_id in self._issued:
            self._remember(call_id, outcome, len(msg.data))
        for watch in list(watchers or ()):
            watch(outcome)

    def _remember(self, call_id: str, outcome: Outcome, size: int) -> None:
        if call_id in self._seen:
            return  # first one wins, as in the stream
        self._seen[call_id] = (outcome, size)
        self._seen_bytes += size
        while len(self._seen) > _SEEN_MAX or self._seen_bytes > _SEEN_MAX_BYTES:
            old_id, (_, old_size) = self._seen.popitem(last=False)
            self._seen_bytes -= old_size
            # Forgotten result: it must be looked up, not taken for unfinished.
            self._issued.pop(old_id, None)

    # ------------------------------------------------------------ calls issued here

    def issued(self, call_ids: Iterable[str]) -> None:
        """Note calls about to be published here (before publishing them)."""
        epoch = self._epoch()
        for cid in call_ids:
            self._issued[cid] = epoch
        while len(self._issued) > _ISSUED_MAX:
            self._issued.popitem(last=False)

    def known(self, call_id: str) -> Outcome | None | bool:
        """What this gateway knows without asking JetStream: the result, None
        when the call surely has none yet, False when it cannot tell."""
        seen = self._seen.get(call_id)
        if seen is not None:
            return seen[0]
        if self._issued.get(call_id) == self._epoch():
            return None
        return False

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
        """A future for the next result of ``call_id``; enter before publishing.
        It fails with ``MalformedResult`` or ``GatewayStopping``."""
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

        def resolve(outcome: Outcome | Exception) -> None:
            if fut.done():
                return
            if isinstance(outcome, Exception):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)

        self.watch(call_id, resolve)
        try:
            yield fut
        finally:
            self.unwatch(call_id, resolve)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved, so an unawaited failure is not logged

    @contextlib.contextmanager
    def expect_many(
        self, call_ids: Iterable[str]
    ) -> Iterator[asyncio.Queue[Outcome | GatewayStopping]]:
        """One queue that every result of ``call_ids`` is put on as it arrives."""
        queue: asyncio.Queue[Outcome | GatewayStopping] = asyncio.Queue()
        ids = list(call_ids)
        for cid in ids:
            self.watch(cid, queue.put_nowait)
        try:
            yield queue
        finally:
            for cid in ids:
                self.unwatch(cid, queue.put_nowait)

    # ------------------------------------------------------------ stored results

    async def stored(self, call_id: str, *, trust_memory: bool = True) -> Outcome | None:
        """The result of ``call_id``, or None if there is none yet.
        ``trust_memory=False``: ask JetStream even for a call issued here."""
        if trust_memory:
            known = self.known(call_id)
            if known is not False:
                return known  # type: ignore[return-value]
        data = await self.bus.last(result_subject(call_id))
        return None if data is None else decode_result(call_id, data)

    async def stored_many(
        self, call_ids: list[str], *, trust_memory: bool = True
    ) -> dict[str, Outcome]:
        found: dict[str, Outcome] = {}
        ask: list[str] = []
        for cid in call_ids:
            known = self.known(cid) if trust_memory else False
            if known is False:
                ask.append(cid)
            elif known is not None:
                found[cid] = known  # type: ignore[assignment]
        gate = asyncio.Semaphore(_LOOKUP_CONCURRENCY)

        async def one(cid: str) -> None:
            async with gate:
                outcome = await self.stored(cid, trust_memory=False)
            if outcome is not None:
                found[cid] = outcome

        async with asyncio.TaskGroup() as tg:
            for cid in ask:
                tg.create_task(one(cid))
        return found
