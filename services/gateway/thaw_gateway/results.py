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

Only real results count (``thaw_core.result_proof``): a result whose proof
does not verify under its call's key is refused (an error event and
``thaw_results_refused_total``) and the waiters keep waiting; a lookup in
RESULTS takes the newest stored result that verifies, not merely the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import msgspec
import nats.errors
from thaw_core import contract
from thaw_core.api import CallResult
from thaw_core.bus import Bus
from thaw_core.metrics import RESULTS_REFUSED
from thaw_core.refusal import Reject
from thaw_core.result_proof import stored_result, verified
from thaw_core.schema import Result

log = logging.getLogger("thaw.gateway")

# How many stored results one request looks up at once.
_LOOKUP_CONCURRENCY = 64
# Calls issued here that are tracked, and results of theirs kept in memory.
_ISSUED_MAX = 200_000
_SEEN_MAX = 100_000
_SEEN_MAX_BYTES = 64 * 1024 * 1024
_REFUSED_MAX = 10_000

_value_decoder = msgspec.json.Decoder()


class GatewayStopping(Exception):
    """The gateway shuts down: a waiting request answers "not finished yet"."""


Watcher = Callable[[Result | Exception], None]


def to_call_result(r: Result) -> CallResult:
    """The HTTP view of a result. The json codec's value is JSON again; pickle
    bytes pass through as base64, never unpickled here. The proof goes along,
    so a client that made the call's key checks the result itself."""
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
        proof=r.proof,
        value_ref=r.value_ref,
    )


class ResultHub:
    def __init__(self, bus: Bus, reject: Reject) -> None:
        self.bus = bus
        self._reject = reject
        self._watchers: dict[str, list[Watcher]] = {}
        # call id -> (connection epoch when it was issued here, result key)
        self._issued: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        # call id -> result key of a call waited for here. A result whose
        # proof fails under its call's key is refused.
        self._watch_keys: dict[str, bytes] = {}
        # call id -> its first real result (the one RESULTS keeps: later ones
        # are deduplicated there by msg-id, but still reach core subscribers)
        self._seen: OrderedDict[str, tuple[Result, int]] = OrderedDict()
        self._seen_bytes = 0
        self._sub: Any = None
        # Calls a refused result was reported for (once each), and the reports.
        self._refused: OrderedDict[str, None] = OrderedDict()
        self._reporting: set[asyncio.Future[None]] = set()

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
        result = verified(self._key_of(call_id), call_id, msg.data)
        if result is None:
            # Forged (or malformed, or another call's): the waiters keep waiting
            # for the real one, and readers of RESULTS skip it.
            self._refuse(call_id, msg.subject, msg.data)
            return
        if call_id in self._issued:
            self._remember(call_id, result, len(msg.data))
        for watch in list(watchers or ()):
            watch(result)

    def _refuse(self, call_id: str, subject: str, data: bytes) -> None:
        """Count a refused result; the first one of a call is also an error
        event. Off the subscription's callback, so that a flood of forgeries
        cannot hold up the real results behind it."""
        RESULTS_REFUSED.labels("gateway").inc()
        if call_id in self._refused:
            return
        self._refused[call_id] = None
        while len(self._refused) > _REFUSED_MAX:
            self._refused.popitem(last=False)
        error = (
            f"a result for call {call_id} whose proof does not verify under the call's key"
            " (not made by an agent for this input): ignored; further ones are only counted"
        )
        task = asyncio.ensure_future(self._reject(subject, data, "forged", error))
        self._reporting.add(task)
        task.add_done_callback(self._reporting.discard)

    def _remember(self, call_id: str, outcome: Result, size: int) -> None:
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

    def issued(self, calls: Iterable[tuple[str, bytes]]) -> None:
        """Note calls (id, result key) about to be published here (before
        publishing them)."""
        epoch = self._epoch()
        for cid, key in calls:
            self._issued[cid] = (epoch, key)
        while len(self._issued) > _ISSUED_MAX:
            self._issued.popitem(last=False)

    def _key_of(self, call_id: str) -> bytes:
        key = self._watch_keys.get(call_id)
        if key is None:
            issued = self._issued.get(call_id)
            key = b"" if issued is None else issued[1]
        return key

    def known(self, call_id: str) -> Result | None | bool:
        """What this gateway knows without asking JetStream: the result, None
        when the call surely has none yet, False when it cannot tell."""
        seen = self._seen.get(call_id)
        if seen is not None:
            return seen[0]
        issued = self._issued.get(call_id)
        if issued is not None and issued[0] == self._epoch():
            return None
        return False

    # ------------------------------------------------------------ waiting

    def watch(self, call_id: str, key: bytes, watcher: Watcher) -> None:
        """Call ``watcher`` with each real result of ``call_id`` (its proof
        verifies under ``key``)."""
        self._watch_keys[call_id] = key
        self._watchers.setdefault(call_id, []).append(watcher)

    def unwatch(self, call_id: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(call_id)
        if watchers is None:
            return
        with contextlib.suppress(ValueError):
            watchers.remove(watcher)
        if not watchers:
            del self._watchers[call_id]
            self._watch_keys.pop(call_id, None)

    @contextlib.contextmanager
    def expect(self, call_id: str, key: bytes) -> Iterator[asyncio.Future[Result]]:
        """A future for the next real result of ``call_id`` (its proof verifies
        under ``key``); enter before publishing. It fails with ``GatewayStopping``."""
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()

        def resolve(outcome: Result | Exception) -> None:
            if fut.done():
                return
            if isinstance(outcome, Exception):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)

        self.watch(call_id, key, resolve)
        try:
            yield fut
        finally:
            self.unwatch(call_id, resolve)
            if fut.done() and not fut.cancelled():
                fut.exception()  # retrieved, so an unawaited failure is not logged

    @contextlib.contextmanager
    def expect_many(
        self, keys: Mapping[str, bytes]
    ) -> Iterator[asyncio.Queue[Result | GatewayStopping]]:
        """One queue that every real result of the calls ``keys`` names (call id
        -> result key) is put on as it arrives."""
        queue: asyncio.Queue[Result | GatewayStopping] = asyncio.Queue()
        ids = list(keys)
        for cid in ids:
            self.watch(cid, keys[cid], queue.put_nowait)
        try:
            yield queue
        finally:
            for cid in ids:
                self.unwatch(cid, queue.put_nowait)

    # ------------------------------------------------------------ stored results

    async def stored(
        self, call_id: str, key: bytes, *, trust_memory: bool = True
    ) -> Result | None:
        """The real result of ``call_id`` (its proof verifies under ``key``),
        or None if there is none yet. ``trust_memory=False``: ask JetStream
        even for a call issued here."""
        if trust_memory:
            known = self.known(call_id)
            if known is not False:
                return known  # type: ignore[return-value]
        return await stored_result(self.bus, call_id, key)

    async def stored_many(
        self, keys: Mapping[str, bytes], *, trust_memory: bool = True
    ) -> dict[str, Result]:
        """The real results of the calls ``keys`` names (call id -> result key).
        A lookup the bus does not answer (a NATS cluster electing the results
        stream's leader) finds nothing this time: "not stored yet" is still
        true, and the callers look again."""
        found: dict[str, Result] = {}
        ask: list[str] = []
        for cid in keys:
            known = self.known(cid) if trust_memory else False
            if known is False:
                ask.append(cid)
            elif known is not None:
                found[cid] = known  # type: ignore[assignment]
        gate = asyncio.Semaphore(_LOOKUP_CONCURRENCY)

        async def one(cid: str) -> None:
            async with gate:
                try:
                    outcome = await self.stored(cid, keys[cid], trust_memory=False)
                except (nats.errors.Error, TimeoutError) as e:
                    log.debug("result lookup of %s not answered: %r", cid, e)
                    return
            if outcome is not None:
                found[cid] = outcome

        async with asyncio.TaskGroup() as tg:
            for cid in ask:
                tg.create_task(one(cid))
        return found
