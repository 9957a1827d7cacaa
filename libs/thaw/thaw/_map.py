"""``.map()`` over the gateway: inputs go in batches (``calls:batch``), results
come back on one ``calls:stream`` per batch as they finish, and are handed out
in input order (or as they come, ``order_outputs=False``).

Batches start small, so that the first results of a long map come quickly, and
double up to ``MAX_CHUNK``. At most ``MAX_PENDING`` inputs are in flight or
held for reordering: a map over a huge or endless iterator runs in bounded memory.

A map rides out a restart of the gateway (``thaw._reconnect``): each batch is
sent under a request key, so a batch sent again makes no second call, and a
stream that breaks is reopened for the results still missing. A batch's
inputs are kept until its results are in: a gateway killed before it wrote
down calls it took answers "never made" for them, and they are sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from typing import Any, NamedTuple

from thaw_core.api import CallResult

from thaw import exception
from thaw._reconnect import Reconnect
from thaw._results import result_outcome, result_value
from thaw._serialization import serialize_args
from thaw.client import CallTarget, Client, current, new_request_key

FIRST_CHUNK = 32
MAX_CHUNK = 1024
# Under the gateway's 64 MiB body limit once base64 has grown it by a third.
MAX_CHUNK_BYTES = 32 * 1024 * 1024
MAX_PENDING = 16384
# A stream that ends with results missing is reopened for them after this long.
RESTREAM_DELAY_S = 0.5

Inputs = Iterable[tuple[tuple[Any, ...], dict[str, Any]]]

_SUBMITTED = object()
_FAILED = object()


class _Batch(NamedTuple):
    """One submitted batch: what sends it again, and where its results go."""

    request_key: bytes
    payloads: list[bytes]
    call_ids: list[str]
    first_index: int


class _Map:
    def __init__(self, client: Client, target: CallTarget) -> None:
        self.client = client
        self.target = target
        self.events: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue()
        self.pending = asyncio.Semaphore(MAX_PENDING)
        self.tasks: set[asyncio.Task[None]] = set()

    def supervise(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self.events.put_nowait((_FAILED, error))

    async def submit(self, inputs: Inputs) -> None:
        index = 0
        for payloads in _batches(inputs):
            for _ in payloads:
                await self.pending.acquire()
            key = new_request_key()
            accepted = await self.client.submit_batch(self.target, payloads, request_key=key)
            self.supervise(self.collect(_Batch(key, payloads, accepted.call_ids, index)))
            index += len(payloads)
        self.events.put_nowait((_SUBMITTED, index))

    async def collect(self, batch: _Batch) -> None:
        """Stream the results of one batch; a stream that ends early or breaks
        is reopened for what it did not bring, and a result seen twice counts once."""
        missing = {cid: batch.first_index + i for i, cid in enumerate(batch.call_ids)}
        again = Reconnect(f"the results of {self.target}")
        resent = False
        try:
            while missing:
                try:
                    async for result in self.client.stream_results(list(missing)):
                        again.ok()
                        resent = False
                        index = missing.pop(result.call_id, None)
                        if index is not None:
                            self.events.put_nowait((index, result))
                except exception.ConnectionError as e:
                    await again.failed(e)
                    continue
                except exception.NotFoundError:
                    if resent:
                        raise
                    # Taken by a gateway killed before it wrote them down: sent
                    # again under the same key, what it had taken is not run twice.
                    await self.client.submit_batch(
                        self.target, batch.payloads, request_key=batch.request_key, resend=True
                    )
                    resent = True
                    continue
                if missing:
                    await asyncio.sleep(RESTREAM_DELAY_S)
        finally:
            again.ok()

    async def results(self, order_outputs: bool) -> AsyncIterator[CallResult]:
        total: int | None = None
        received = next_index = 0
        held: dict[int, CallResult] = {}
        while total is None or received < total:
            key, item = await self.events.get()
            if key is _FAILED:
                raise item
            if key is _SUBMITTED:
                total = item
                continue
            received += 1
            if not order_outputs:
                self.pending.release()
                yield item
                continue
            held[key] = item
            while next_index in held:
                result = held.pop(next_index)
                next_index += 1
                self.pending.release()
                yield result

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()


async def map_calls(
    target: CallTarget,
    label: str,
    inputs: Inputs,
    *,
    order_outputs: bool = True,
    return_exceptions: bool = False,
    total: int | None = None,
) -> AsyncIterator[Any]:
    """The results of one call per input: values, or (``return_exceptions``)
    the exceptions in their place; without it the first failure raises."""
    from thaw.progress import map_progress

    run = _Map(current(), target)
    run.supervise(run.submit(inputs))
    outcome = result_outcome if return_exceptions else result_value
    with map_progress(label, total) as progress:
        try:
            async for result in run.results(order_outputs):
                progress.advance(failed=result.status != "success")
                yield outcome(result, label)
        finally:
            run.cancel()


async def submit_calls(target: CallTarget, inputs: Inputs) -> int:
    """Submit every input without waiting for results (``spawn_map``)."""
    client = current()
    count = 0
    for payloads in _batches(inputs):
        await client.submit_batch(target, payloads)
        count += len(payloads)
    return count


def _batches(inputs: Inputs) -> Iterator[list[bytes]]:
    """Pickled inputs in batches of growing size, each under ``MAX_CHUNK_BYTES``."""
    items = iter(inputs)
    size = FIRST_CHUNK
    while True:
        payloads: list[bytes] = []
        nbytes = 0
        for args, kwargs in items:
            payload = serialize_args(args, kwargs)
            payloads.append(payload)
            nbytes += len(payload)
            if len(payloads) >= size or nbytes >= MAX_CHUNK_BYTES:
                break
        if not payloads:
            return
        yield payloads
        size = min(size * 2, MAX_CHUNK)
