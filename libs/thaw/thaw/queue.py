"""``thaw.Queue``: a named FIFO that functions and local code share; each
item is taken by exactly one getter.

Each Queue is a JetStream work-queue stream (``contract.queue_stream``) with
one subject per partition; every operation goes through the gateway (from a
container, relayed by its agent). Items are encoded as Dict values are
(``thaw._stores``), large ones through the blob store.

Taking is at-least-once and made to look exactly-once: local code's items
are acked as they are handed over; a container's stay leased to it until it
takes its next item from the same partition or its input returns
(``thaw.runtime.store_calls``), so a container killed mid-item hands that
item to another getter instead of losing it: at once when its agent sees it
go (``thaw_agent.store_relay``), after ``contract.QUEUE_ACK_WAIT_S`` when
the agent is lost too.
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from thaw_core.schema.stores import (
    QueueClear,
    QueueDelete,
    QueueEnsure,
    QueueGet,
    QueueLen,
    QueueList,
    QueuePeek,
    QueuePut,
    StoreInfo,
)

from thaw import _stores
from thaw._env import is_local
from thaw._stores import checked, encode_value, kept, load
from thaw._sync import aio_iterator, aio_method, background_loop
from thaw.exception import InvalidError

# One request waits this long at most (the gateway's bound); longer waits ask again.
WAIT_STEP_S = 45.0
# iterate(): how often to look for new items while item_poll_timeout runs.
POLL_S = 0.1


def _part(partition: str | None) -> str | None:
    return None if partition is None else checked("queue partition", partition)


class Queue(_stores.NamedStore):
    KIND = "queue"
    ENSURE = QueueEnsure
    DELETE = QueueDelete

    # ------------------------------------------------------------ put

    @aio_method
    async def put(
        self,
        v: Any,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int | None = None,
    ) -> None:
        """Add ``v`` (a queue is never full, so this never waits)."""
        await self._put([v], partition, partition_ttl)

    @aio_method
    async def put_many(
        self,
        vs: Iterable[Any],
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
        partition_ttl: int | None = None,
    ) -> None:
        await self._put(list(vs), partition, partition_ttl)

    async def _put(self, vs: list[Any], partition: str | None, ttl: int | None) -> None:
        if ttl is not None:
            raise InvalidError(
                "Queue.put(partition_ttl=...): thaw keeps a queue's items until they are"
                " taken or cleared; leave partition_ttl out"
            )
        name, part = await self._ready(), _part(partition)
        stored = [await kept(encode_value(v)) for v in vs]
        for batch in _stores.batches(stored, len):
            await _stores.call(QueuePut(name=name, values=batch, partition=part))

    # ------------------------------------------------------------ get

    @aio_method
    async def get(
        self, block: bool = True, timeout: float | None = None, *, partition: str | None = None
    ) -> Any:
        """Take the next item. Waits (up to ``timeout`` seconds, then
        ``queue.Empty``) while there is none; with ``block=False``, None at once."""
        got = await self._take(1, block, timeout, partition)
        return got[0] if got else None

    @aio_method
    async def get_many(
        self,
        n_values: int,
        block: bool = True,
        timeout: float | None = None,
        *,
        partition: str | None = None,
    ) -> list[Any]:
        """Take up to ``n_values`` items, as soon as there is one (as ``get`` waits)."""
        if n_values < 1:
            raise InvalidError(f"get_many(n_values={n_values}): take at least one")
        return await self._take(n_values, block, timeout, partition)

    async def _take(
        self, n: int, block: bool, timeout: float | None, partition: str | None
    ) -> list[Any]:
        name, part = await self._ready(), _part(partition)
        leased = not is_local()
        held_key = f"{name}/{part or ''}"
        calls = _lease_calls() if leased else None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_STEP_S if deadline is None else max(0.0, deadline - time.monotonic())
            wait = min(left, WAIT_STEP_S) if block else 0.0
            ack = calls.swap_held(held_key) if calls is not None else []
            op = QueueGet(name=name, n=n, timeout_s=wait, partition=part, lease=leased, ack=ack)
            reply = await _stores.call(op, timeout_s=wait)
            if calls is not None and reply.tokens:
                calls.swap_held(held_key, reply.tokens)
            if reply.values:
                return [await load(v) for v in reply.values]
            if not block:
                return []
            if deadline is not None and time.monotonic() >= deadline:
                raise _stdlib_queue.Empty()

    # ------------------------------------------------------------ the whole queue

    @aio_method
    async def len(self, *, partition: str | None = None, total: bool = False) -> int:
        """Items not yet taken for good (in ``partition``, or all with ``total``)."""
        op = QueueLen(name=await self._ready(), partition=_part(partition), total=total)
        return (await _stores.call(op)).count

    @aio_method
    async def clear(self, *, partition: str | None = None, all: bool = False) -> None:
        op = QueueClear(name=await self._ready(), partition=_part(partition), all=all)
        await _stores.call(op)

    @aio_iterator
    async def iterate(
        self, *, partition: str | None = None, item_poll_timeout: float = 0.0
    ) -> AsyncIterator[Any]:
        """Every item, oldest first, without taking any; then, for
        ``item_poll_timeout`` seconds after the last one, new ones as they come."""
        name, part = await self._ready(), _part(partition)
        cursor = 0
        quiet_since = time.monotonic()
        while True:
            reply = await _stores.call(QueuePeek(name=name, partition=part, cursor=cursor))
            for v in reply.values:
                yield await load(v)
            if reply.values:
                cursor = reply.cursor
                quiet_since = time.monotonic()
                continue
            if time.monotonic() - quiet_since >= item_poll_timeout:
                return
            await asyncio.sleep(POLL_S)


def _lease_calls() -> Any:
    from thaw.runtime.store_calls import calls

    return calls


def peek(name: str, n: int, partition: str | None = None) -> list[Any]:
    """The first ``n`` items of queue ``name``, left in it."""
    op = QueuePeek(name=checked("queue", name), partition=_part(partition), limit=n)

    async def read() -> list[Any]:
        return [await load(v) for v in (await _stores.call(op)).values]

    return background_loop().run(read())


def list_queues() -> list[StoreInfo]:
    """Every queue: its name, items and bytes stored."""
    return background_loop().run(_stores.call(QueueList())).infos
