"""Which calls were made, so that ``GET /v1/calls/{id}`` can tell "pending"
(202) from "never made" (404), on any gateway replica and after a restart.

Neither stream can answer that: INVOKE is a work queue (an input vanishes
once acked, and its subject names the function, not the call) and RESULTS
knows only finished calls. So each call issued here is recorded in the
``calls`` table, written in batches off the request path: a call pays an
append to a list, never a database round trip. Until a batch is written the
ids are answered from memory (as are recent ones, so a poll loop does not
query Postgres either). Rows are kept for ``KEEP_DAYS``, well past RESULTS'
24 h, then pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from thaw_core.db import Database
from thaw_core.metrics import CALLS_ISSUED

log = logging.getLogger("thaw.gateway")

FLUSH_EVERY_S = 0.05
# Ids answered from memory without asking Postgres.
_RECENT_MAX = 200_000
# While Postgres is away, at most this many unwritten calls are kept.
_PENDING_MAX = 1_000_000
KEEP_DAYS = 7
PRUNE_EVERY_S = 3600.0


class IssuedCall(NamedTuple):
    call_id: str
    app: str
    function: str
    codec: str
    map_id: str = ""
    index: int = 0
    # Its result key (thaw_core.result_proof): what tells its real result from a forgery.
    key: bytes = b""


_INSERT = """
INSERT INTO calls (call_id, app, function, codec, map_id, idx, result_key)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bytea[]
)
ON CONFLICT (call_id) DO NOTHING
"""
_SELECT = """
SELECT call_id, app, function, codec, map_id, idx, result_key
FROM calls WHERE call_id = ANY($1::text[])
"""


class CallLog:
    def __init__(self, db: Database, *, flush_every_s: float = FLUSH_EVERY_S) -> None:
        self.db = db
        self.flush_every_s = flush_every_s
        self._pending: list[IssuedCall] = []
        self._recent: OrderedDict[str, IssuedCall] = OrderedDict()
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()

    def record(self, calls: Iterable[IssuedCall]) -> None:
        for call in calls:
            self._pending.append(call)
            self._remember(call)
            CALLS_ISSUED.labels(call.app, call.function).inc()
        if len(self._pending) > _PENDING_MAX:
            dropped = len(self._pending) - _PENDING_MAX
            del self._pending[:dropped]
            log.error("call log: Postgres unreachable; %d call ids not recorded", dropped)
        self._wake.set()

    def _remember(self, call: IssuedCall) -> None:
        self._recent[call.call_id] = call
        if len(self._recent) > _RECENT_MAX:
            self._recent.popitem(last=False)

    async def lookup(self, call_ids: list[str]) -> dict[str, IssuedCall]:
        """The calls among ``call_ids`` that were issued (by any replica)."""
        found = {cid: self._recent[cid] for cid in call_ids if cid in self._recent}
        missing = [cid for cid in call_ids if cid not in found]
        if missing:
            for row in await self.db.fetch(_SELECT, missing):
                call = IssuedCall(*row)
                found[call.call_id] = call
                self._remember(call)
        return found

    async def get(self, call_id: str) -> IssuedCall | None:
        return (await self.lookup([call_id])).get(call_id)

    async def flush(self) -> None:
        async with self._flush_lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                await self.db.execute(_INSERT, *(list(col) for col in zip(*batch, strict=True)))
            except Exception:
                self._pending[:0] = batch  # retried on the next tick
                raise

    async def run(self, stopping: asyncio.Event) -> None:
        """Write batches until ``stopping``, then write what is left."""
        loop = asyncio.get_running_loop()
        stopped = asyncio.ensure_future(stopping.wait())
        next_prune = loop.time()
        try:
            while not stopping.is_set():
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({woken, stopped}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                self._wake.clear()
                try:
                    await self.flush()
                    if loop.time() >= next_prune:
                        await self.prune()
                        next_prune = loop.time() + PRUNE_EVERY_S
                except Exception:  # Postgres away: keep the ids, retry
                    log.warning("call log: could not write call ids; retrying", exc_info=True)
                    await asyncio.wait({stopped}, timeout=1.0)
                # Batch what arrives meanwhile into the next write.
                await asyncio.wait({stopped}, timeout=self.flush_every_s)
        finally:
            stopped.cancel()
            with contextlib.suppress(Exception):
                await self.flush()

    async def prune(self) -> None:
        await self.db.execute(
            "DELETE FROM calls WHERE created_at < now() - make_interval(days => $1)", KEEP_DAYS
        )
