"""The pull loop under ``Bus.consume`` and ``Bus.pull``: fetch from a durable
pull consumer no more messages than there are free slots, and hand each over.

Asking for no more than the free slots leaves inputs that cannot start yet
with other agents. One fetch asks for every free slot at once (up to a
batch), so a busy consumer costs one round trip per batch, not per message.
The loop outlives NATS going away (it waits for the reconnect, without
queueing pull requests meanwhile) and a consumer the server lost (it puts
back the stream and consumer the bus was given, with a backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import nats.js.errors
from nats.aio.msg import Msg
from nats.js.client import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import trace

from thaw_core.bus.delivery import KeepAlive, num_delivered, settle, trace_context
from thaw_core.contract import ConsumerSpec
from thaw_core.telemetry import current_span

if TYPE_CHECKING:
    from thaw_core.bus.connection import Bus

log = logging.getLogger("thaw_core.bus")
_tracer = trace.get_tracer("thaw.bus")

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 2.0
# A message whose handler raised is redelivered after this, not in a hot loop.
NAK_DELAY_S = 1.0

Handler = Callable[[Msg], Awaitable[None]]

# Called with each message fetched; it owns the message from then on.
Take = Callable[[Msg], None]
# The slots free now; None ends the loop.
FreeSlots = Callable[[], "int | None"]


def take_queued_at_once(psub: JetStreamContext.PullSubscription) -> None:
    """Make ``psub``'s fetches hand over a message already received at once.

    nats-py's fetch reads each message of a batch with ``Subscription.next_msg``,
    which starts a task (named by a fresh uuid4) and a ``wait_for`` timer even
    for a message that is queued already: turns of the event loop per message,
    a good part of what an input costs an agent. A queued message is taken
    here without them; only an empty queue is waited on, by nats-py's own
    ``next_msg``, so timeouts and a closed connection behave as before.
    """
    sub = psub._sub
    queue = sub._pending_queue
    wait = sub.next_msg

    async def next_msg(timeout: float | None = 1.0) -> Msg:
        if queue.empty() or sub._conn.is_closed:
            return await wait(timeout)
        msg = queue.get_nowait()
        sub._pending_size -= len(msg.data)
        queue.task_done()  # as nats-py counts a message taken from the queue
        return msg

    sub.next_msg = next_msg  # type: ignore[method-assign]


async def wait_any(*events: asyncio.Event, timeout_s: float) -> None:
    """Until one of ``events`` is set, or ``timeout_s`` passed."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def pull_loop(
    bus: Bus,
    stream: str,
    durable: str,
    take: Take,
    *,
    free_slots: FreeSlots,
    slots_freed: asyncio.Event,
    batch: int,
    fetch_timeout_s: float,
    stop: asyncio.Event,
    ensure: ConsumerSpec | None = None,
) -> None:
    """Until ``stop`` is set, the bus closes or ``free_slots()`` says None.
    ``slots_freed`` is set by whoever frees a slot; while none is free the
    loop waits for it. ``ensure``: create (or update) the consumer before
    binding to it."""
    me = asyncio.get_running_loop().create_future()
    bus.loops.add(me)
    psub: JetStreamContext.PullSubscription | None = None
    backoff = BACKOFF_MIN_S

    def stopping() -> bool:
        return stop.is_set() or bus.closing.is_set()

    async def pause(seconds: float) -> None:
        await wait_any(stop, bus.closing, timeout_s=seconds)

    try:
        while not stopping():
            # Cleared before counting: a slot freed from here on wakes the wait below.
            slots_freed.clear()
            free = free_slots()
            if free is None:
                return
            if free <= 0:
                await wait_any(slots_freed, stop, bus.closing, timeout_s=fetch_timeout_s)
                continue
            if bus.nc.is_closed:
                log.warning("bus: connection closed; pulling from %s/%s ends", stream, durable)
                return
            if not bus.nc.is_connected:
                # Pull requests sent now would pile up in the client's buffer
                # and all reach the server on reconnect; wait instead. Polling
                # a local flag is free, so poll often and resume promptly.
                await pause(BACKOFF_MIN_S)
                continue
            try:
                if psub is None:
                    if ensure is not None:
                        await bus.ensure_consumer(ensure)
                    # Binding only creates an inbox subscription, which the
                    # client re-subscribes after every reconnect.
                    psub = await bus.js.pull_subscribe_bind(durable=durable, stream=stream)
                    take_queued_at_once(psub)
                msgs = await psub.fetch(min(batch, free), timeout=fetch_timeout_s)
            except TimeoutError:  # nats TimeoutError / FetchTimeoutError: no messages
                backoff = BACKOFF_MIN_S
                continue
            except asyncio.CancelledError:
                raise
            except nats.js.errors.APIError as e:
                # 404/503 here: the consumer or stream is gone (a server that
                # lost its store) or JetStream is not ready yet after a restart.
                log.warning("bus: fetch from %s/%s failed: %s", stream, durable, e)
                await bus.recreate_consumer(stream, durable)
                await pause(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            except Exception as e:  # noqa: BLE001 - the loop must outlive any fetch failure
                # (a closed connection is noticed at the top of the loop)
                log.warning("bus: fetch from %s/%s failed: %r", stream, durable, e)
                await pause(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            for i, m in enumerate(msgs):
                if i >= free or stopping():
                    # nats-py hands back late deliveries of an earlier, expired
                    # pull along with this one, so a fetch can exceed what was
                    # asked for: the surplus goes back rather than overrunning
                    # the slots. So does what was fetched while told to stop,
                    # rather than staying locked until ack_wait.
                    await settle(m, "nak")
                    continue
                take(m)
    finally:
        if psub is not None:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
        bus.loops.discard(me)
        if not me.done():
            me.set_result(None)


async def fetch_once(bus: Bus, consumer: ConsumerSpec, count: int, timeout_s: float) -> list[Msg]:
    """Up to ``count`` messages from ``consumer`` (created if missing), waiting
    up to ``timeout_s`` for the first; none when nothing came."""
    await bus.ensure_consumer(consumer)
    psub = await bus.js.pull_subscribe_bind(durable=consumer.durable, stream=consumer.stream)
    take_queued_at_once(psub)
    try:
        return await psub.fetch(count, timeout=timeout_s)
    except TimeoutError:
        return []
    finally:
        with contextlib.suppress(Exception):
            await psub.unsubscribe()


async def consume_loop(
    bus: Bus,
    stream: str,
    durable: str,
    handler: Handler,
    *,
    batch: int,
    fetch_timeout_s: float,
    stop: asyncio.Event,
    max_concurrency: int,
    in_progress_every_s: float | None,
) -> None:
    """``Bus.consume``: a pull loop whose slots are handler tasks."""
    if max_concurrency < 1 or batch < 1:
        raise ValueError("batch and max_concurrency must be >= 1")
    tasks: set[asyncio.Task[None]] = set()
    slots_freed = asyncio.Event()

    def done(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        slots_freed.set()

    def take(m: Msg) -> None:
        t = asyncio.create_task(_handle(stream, m, handler, in_progress_every_s))
        tasks.add(t)
        t.add_done_callback(done)

    try:
        await pull_loop(
            bus,
            stream,
            durable,
            take,
            free_slots=lambda: max_concurrency - len(tasks),
            slots_freed=slots_freed,
            batch=batch,
            fetch_timeout_s=fetch_timeout_s,
            stop=stop,
        )
        if tasks:
            await asyncio.wait(set(tasks))
    except asyncio.CancelledError:
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(set(tasks), timeout=1)
        raise


async def _handle(
    stream: str, msg: Msg, handler: Handler, in_progress_every_s: float | None
) -> None:
    """One message of ``consume``, inside its publisher's trace: acked when
    ``handler`` returns, nak'd (redelivered after a delay) when it raises."""
    token = otel_context.attach(trace_context(msg))
    keepalive: KeepAlive | None = None
    try:
        with current_span(
            _tracer,
            f"consume {stream}",
            kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.destination.name": msg.subject},
        ):
            if in_progress_every_s:
                keepalive = KeepAlive(msg, in_progress_every_s)
            try:
                await handler(msg)
            except asyncio.CancelledError:
                await settle(msg, "nak")
                raise
            except Exception:
                log.exception(
                    "bus: handler for %s failed (delivery %s); redelivering in %gs",
                    msg.subject,
                    num_delivered(msg),
                    NAK_DELAY_S,
                )
                await settle(msg, "nak", delay_s=NAK_DELAY_S)
                return
            finally:
                if keepalive is not None:
                    keepalive.stop()
            await settle(msg, "ack")
    finally:
        otel_context.detach(token)
