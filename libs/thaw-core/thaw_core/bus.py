"""The bus: NATS core for request/reply, JetStream for everything that must
survive a crash.

Streams (``STREAMS``; ``Bus.provision`` creates or updates them, idempotently):

=========  ==================  ===========  ===========================================
stream     subjects            retention    what
=========  ==================  ===========  ===========================================
INVOKE     ``thaw.invoke.>``   workqueue    inputs, ``thaw.invoke.<app>.<fn>``; one
                                            durable pull consumer per function, which
                                            agents pull from for their free slots
RESULTS    ``thaw.result.>``   limits, 24h  ``thaw.result.<call_id>``, published with
                                            ``msg_id=<call_id>`` so a redelivered input
                                            never stores two results
EVENTS     ``thaw.event.>``    limits, 1h   heartbeats, errors, state changes
LOGS       ``thaw.logs.>``     limits, 24h  container stdout/stderr
BUILD      ``thaw.build.>``    limits, 24h  image build requests and progress
=========  ==================  ===========  ===========================================

Plain NATS subjects (not persisted) carry request/reply such as
``thaw.health.<service>``: see ``Bus.request`` / ``Bus.serve``.

Delivery semantics
------------------
JetStream delivery is **at-least-once**. ``Bus.consume`` acks an input only
when its handler returns, so a handler must store its result (publish to
RESULTS, write to Postgres) *before* returning. An agent that dies mid-call
leaves the input unacked and JetStream redelivers it after the consumer's
``ack_wait`` — to another agent if one pulls first. Handlers therefore must be
idempotent; results are keyed by call id and deduplicated with
``Nats-Msg-Id`` (``publish(..., msg_id=...)``, within the stream's
``duplicate_window``), so a second execution never shows a client a second
result. A handler that raises naks with a 1 s delay (redelivery without a hot
loop); ``max_deliver`` on the consumer bounds how often that repeats.

Long calls must either call ``msg.in_progress()`` more often than ``ack_wait``
or pass ``in_progress_every_s`` to ``consume``; otherwise JetStream assumes the
worker died and hands the input to someone else while it still runs.

Every publish carries the caller's OpenTelemetry context in its headers
(W3C ``traceparent``), and every consumed or served message is handled inside
the context extracted from them, so one trace follows a call across services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from thaw_core import schema
from thaw_core.contract import STREAMS, StreamSpec

__all__ = [
    "STREAMS",
    "Bus",
    "BusRequestError",
    "Handler",
    "Msg",
    "PubAck",
    "StreamSpec",
    "trace_context",
]

log = logging.getLogger(__name__)
_tracer = trace.get_tracer("thaw.bus")

Handler = Callable[[Msg], Awaitable[None]]

# Reply headers that carry a serve handler's failure back to the requester
# (the same names NATS micro services use), so a request fails fast with the
# reason instead of waiting for its timeout.
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

# nats-py waits this long between reconnect attempts to one server. Short, since
# there is a single local server and a restart should be noticed quickly.
_RECONNECT_WAIT_S = 1.0
_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 2.0
_NAK_DELAY_S = 1.0


def _stream_config(spec: StreamSpec) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy(spec.retention),
        # File storage: inputs and results must survive a nats-server restart.
        storage=StorageType.FILE,
        num_replicas=1,
        # 0 means "no limit" to the server.
        max_age=spec.max_age_s or 0,
        duplicate_window=spec.duplicate_window_s,
        max_msg_size=spec.max_msg_size if spec.max_msg_size is not None else -1,
    )


class BusRequestError(Exception):
    """The responder to a ``Bus.request`` failed (its handler raised)."""

    def __init__(self, subject: str, error: str, code: str = "500") -> None:
        super().__init__(f"{subject}: {code} {error}")
        self.subject = subject
        self.error = error
        self.code = code


def trace_context(msg: Msg) -> otel_context.Context:
    """The OpenTelemetry context its publisher injected into ``msg``'s headers
    (an empty context when it carries none)."""
    return propagate.extract(msg.headers or {})


def _payload(msg: schema.Message | bytes) -> bytes:
    if isinstance(msg, (bytes, bytearray, memoryview)):
        return bytes(msg)
    return schema.encode(msg)


def _with_trace(headers: dict[str, str] | None) -> dict[str, str] | None:
    """``headers`` plus the current trace context; None when both are empty, so
    that untraced messages are sent as plain PUB without a header block."""
    out = dict(headers) if headers else {}
    propagate.inject(out)
    return out or None


class Bus:
    """One NATS connection and its JetStream context. Create with ``connect``."""

    nc: Client
    js: JetStreamContext

    def __init__(self, nc: Client, *, name: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.name = name
        self._ever_connected = False
        self._closing = asyncio.Event()
        self._loops: set[asyncio.Future[None]] = set()
        self._streams: dict[str, StreamSpec] = {}
        self._consumers: dict[tuple[str, str], ConsumerConfig] = {}

    # ------------------------------------------------------------ connection

    @classmethod
    async def connect(cls, url: str, *, name: str, connect_timeout_s: float = 30) -> Bus:
        """Connect to ``url`` (several may be given, comma-separated).

        The first connection is retried until ``connect_timeout_s`` (services
        start in any order, e.g. beside a nats-server that is still starting);
        after that the client reconnects forever, buffering publishes while it
        is away, so a NATS restart never ends a service.
        """
        bus = cls(Client(), name=name)
        servers = [u.strip() for u in url.split(",") if u.strip()]
        try:
            await asyncio.wait_for(
                bus.nc.connect(
                    servers=servers,
                    name=name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=_RECONNECT_WAIT_S,  # type: ignore[arg-type]
                    connect_timeout=max(1, min(int(connect_timeout_s), 2)),
                    drain_timeout=10,
                    # A server that vanishes without closing the socket (a dead
                    # host, a partition) is noticed after ~30 s instead of the
                    # client default of 4 min, during which publishes time out.
                    ping_interval=10,
                    max_outstanding_pings=3,
                    error_cb=bus._on_error,
                    disconnected_cb=bus._on_disconnected,
                    reconnected_cb=bus._on_reconnected,
                    closed_cb=bus._on_closed,
                ),
                timeout=connect_timeout_s,
            )
        except TimeoutError as e:
            # With max_reconnect_attempts=-1 nats-py retries refused connects
            # itself, so running out of time is the only way a reachable-later
            # server ends up here; say what the last attempt saw.
            last = bus.nc.last_error
            with contextlib.suppress(Exception):
                await bus.nc.close()
            raise TimeoutError(
                f"could not connect to NATS at {url} within {connect_timeout_s:g}s"
                f" (last error: {last!r})"
            ) from (last or e)
        except BaseException:
            # A bad URL or a cancelled start: don't leave a half-open client behind.
            with contextlib.suppress(Exception):
                await bus.nc.close()
            raise
        bus._ever_connected = True
        log.info(
            "bus %s connected to %s",
            name,
            bus.nc.connected_url.netloc if bus.nc.connected_url else url,
        )
        return bus

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    async def _on_error(self, e: Exception) -> None:
        # Before the first connection every refused attempt lands here; that is
        # expected while the server starts, so it is not worth a warning.
        if self._ever_connected:
            log.warning("bus %s: nats error: %r", self.name, e)
        else:
            log.debug("bus %s: connect attempt failed: %r", self.name, e)

    async def _on_disconnected(self) -> None:
        if self._ever_connected and not self._closing.is_set():
            log.warning("bus %s: disconnected from NATS; reconnecting", self.name)

    async def _on_reconnected(self) -> None:
        url = self.nc.connected_url
        log.info("bus %s: reconnected to %s", self.name, url.netloc if url else "?")

    async def _on_closed(self) -> None:
        log.info("bus %s: connection closed", self.name)

    async def close(self, *, grace_s: float = 5.0) -> None:
        """Stop every ``consume`` loop on this bus (they finish their in-flight
        handlers, up to ``grace_s``), then drain the connection: pending
        publishes and acks are flushed before it closes."""
        self._closing.set()
        if self._loops:
            await asyncio.wait(set(self._loops), timeout=grace_s)
        if self.nc.is_closed:
            return
        try:
            if self.nc.is_connected:
                await self.nc.drain()
                return
        except Exception as e:  # noqa: BLE001 - drain fails on a connection that breaks meanwhile
            log.debug("bus %s: drain failed: %r", self.name, e)
        with contextlib.suppress(Exception):
            await self.nc.close()

    # ------------------------------------------------------------ provisioning

    async def provision(self, streams: Iterable[StreamSpec] = STREAMS) -> None:
        """Create each stream, or bring an existing one to its spec."""
        for spec in streams:
            await self._provision_one(spec)

    async def _provision_one(self, spec: StreamSpec) -> None:
        config = _stream_config(spec)
        try:
            # CREATE with an identical config succeeds, so the common case is one call.
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError as e:
            # 10058: "stream name already in use with a different configuration".
            if e.err_code != 10058:
                raise
            log.info("bus: updating stream %s to its spec", spec.name)
            await self.js.update_stream(config)
        self._streams[spec.name] = spec

    async def ensure_consumer(
        self,
        stream: str,
        durable: str,
        *,
        filter_subject: str,
        ack_wait_s: float = 30,
        max_deliver: int = -1,
        max_ack_pending: int = 1000,
    ) -> None:
        """Create the durable pull consumer, or update it to these settings."""
        config = ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject=filter_subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_deliver=max_deliver,
            max_ack_pending=max_ack_pending,
        )
        # The server's CONSUMER.CREATE without an action is create-or-update, so
        # this is idempotent and also applies changed editable settings.
        await self.js.add_consumer(stream, config)
        self._consumers[(stream, durable)] = config

    # ------------------------------------------------------------ publishing

    async def publish(
        self,
        subject: str,
        msg: schema.Message | bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> PubAck:
        """Store ``msg`` in the stream that owns ``subject`` and wait for the
        server's ack. With ``msg_id``, a second publish of the same id within the
        stream's duplicate window is dropped (``PubAck.duplicate`` is True)."""
        hdrs = dict(headers) if headers else {}
        if msg_id is not None:
            hdrs["Nats-Msg-Id"] = msg_id
        return await self.js.publish(subject, _payload(msg), headers=_with_trace(hdrs))

    async def publish_core(
        self,
        subject: str,
        msg: schema.Message | bytes,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Fire-and-forget on plain NATS: lost if nobody listens right now."""
        await self.nc.publish(subject, _payload(msg), headers=_with_trace(headers))

    async def request(
        self, subject: str, msg: schema.Message | bytes, *, timeout_s: float = 5
    ) -> Msg:
        """Request/reply over plain NATS. Raises ``nats.errors.NoRespondersError``
        when nobody serves ``subject``, ``nats.errors.TimeoutError`` on timeout,
        and ``BusRequestError`` when the responder's handler raised."""
        reply = await self.nc.request(
            subject, _payload(msg), timeout=timeout_s, headers=_with_trace(None)
        )
        if reply.headers and ERROR_HEADER in reply.headers:
            raise BusRequestError(
                subject, reply.headers[ERROR_HEADER], reply.headers.get(ERROR_CODE_HEADER, "500")
            )
        return reply

    # ------------------------------------------------------------ receiving

    async def serve(self, subject: str, handler: Handler, *, queue: str = "") -> Subscription:
        """Subscribe ``handler`` to ``subject`` (plain NATS; with ``queue``, one
        member of the group gets each message). Messages are handled one at a
        time, in order, each inside its publisher's trace context. A handler that
        raises is logged and, for a request, answered with an error reply; the
        subscription carries on."""

        async def run(msg: Msg) -> None:
            token = otel_context.attach(trace_context(msg))
            try:
                await handler(msg)
            except Exception as e:
                log.exception("bus: handler for %s failed", msg.subject)
                if msg.reply:
                    with contextlib.suppress(Exception):
                        await self.nc.publish(
                            msg.reply,
                            b"",
                            headers={
                                ERROR_HEADER: _header_value(f"{type(e).__name__}: {e}"),
                                ERROR_CODE_HEADER: "500",
                            },
                        )
            finally:
                otel_context.detach(token)

        sub = await self.nc.subscribe(subject, queue=queue, cb=run)
        # Live when serve() returns: a request from another connection right
        # after would otherwise find no responder.
        await self.subscriptions_live()
        return sub

    async def subscriptions_live(self) -> None:
        """Return once the server knows every subscription made so far on this
        connection. Twice, because nats-py can write the first flush's PING
        ahead of a SUB still in its pending buffer."""
        await self.nc.flush()
        await self.nc.flush()

    async def consume(
        self,
        stream: str,
        durable: str,
        handler: Handler,
        *,
        batch: int = 10,
        fetch_timeout_s: float = 1.0,
        stop: asyncio.Event | None = None,
        max_concurrency: int = 1,
        in_progress_every_s: float | None = None,
    ) -> None:
        """Pull from the durable consumer ``durable`` on ``stream`` until ``stop``
        is set (or the bus closes), running ``handler`` on up to
        ``max_concurrency`` messages at once.

        A message whose handler returns without acking, naking or terming it is
        acked; one whose handler raises is nak'd for redelivery in 1 s. The loop
        never asks for more messages than it has free slots, so inputs it cannot
        start yet stay available to other agents. It survives NATS going away:
        it waits for the reconnect and keeps pulling. On ``stop`` it stops
        pulling and waits for the handlers it started. Cancelling it cancels
        them and naks their messages so they are redelivered at once.

        ``in_progress_every_s``: while a handler runs, tell JetStream it is
        still working at this interval, so that a call longer than ``ack_wait``
        is not redelivered while it is alive (its messages still are when the
        process dies). Set it below the consumer's ``ack_wait``.
        """
        if max_concurrency < 1 or batch < 1:
            raise ValueError("batch and max_concurrency must be >= 1")
        stop = stop or asyncio.Event()
        me = asyncio.get_running_loop().create_future()
        self._loops.add(me)
        tasks: set[asyncio.Task[None]] = set()
        psub: JetStreamContext.PullSubscription | None = None
        backoff = _BACKOFF_MIN_S

        def stopping() -> bool:
            return stop.is_set() or self._closing.is_set()

        async def pause(seconds: float) -> None:
            # Sleep, but wake as soon as we are told to stop.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_wait_any(stop, self._closing), timeout=seconds)

        try:
            while not stopping():
                free = max_concurrency - len(tasks)
                if free <= 0:
                    await asyncio.wait(
                        tasks, timeout=fetch_timeout_s, return_when=asyncio.FIRST_COMPLETED
                    )
                    continue
                if self.nc.is_closed:
                    log.warning("bus: connection closed; consume %s/%s ends", stream, durable)
                    return
                if not self.nc.is_connected:
                    # Pull requests sent now would pile up in the client's buffer
                    # and all reach the server on reconnect; wait instead. Polling
                    # a local flag is free, so poll often and resume promptly.
                    await pause(_BACKOFF_MIN_S)
                    continue
                try:
                    if psub is None:
                        # Binding only creates an inbox subscription, which the
                        # client re-subscribes after every reconnect.
                        psub = await self.js.pull_subscribe_bind(durable=durable, stream=stream)
                    msgs = await psub.fetch(min(batch, free), timeout=fetch_timeout_s)
                except TimeoutError:  # nats TimeoutError / FetchTimeoutError: no messages
                    backoff = _BACKOFF_MIN_S
                    continue
                except asyncio.CancelledError:
                    raise
                except nats.js.errors.APIError as e:
                    # 404/503 here: the consumer or stream is gone (a server that
                    # lost its store) or JetStream is not ready yet after a restart.
                    log.warning("bus: fetch from %s/%s failed: %s", stream, durable, e)
                    await self._recreate_consumer(stream, durable)
                    await pause(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                    continue
                except Exception as e:  # noqa: BLE001 - the loop must outlive any fetch failure
                    # (a closed connection is noticed at the top of the loop)
                    log.warning("bus: fetch from %s/%s failed: %r", stream, durable, e)
                    await pause(backoff)
                    backoff = min(backoff * 2, _BACKOFF_MAX_S)
                    continue
                backoff = _BACKOFF_MIN_S
                for i, m in enumerate(msgs):
                    if i >= free:
                        # nats-py hands back late deliveries of an earlier, expired
                        # pull along with this one, so a fetch can exceed what was
                        # asked for; give the surplus back rather than overrun
                        # max_concurrency (which is the container's slot count).
                        await _settle(m.nak, m)
                        continue
                    if stopping():
                        # Fetched while being told to stop: give it back now
                        # rather than leaving it locked until ack_wait.
                        await _settle(m.nak, m)
                        continue
                    t = asyncio.create_task(self._handle(stream, m, handler, in_progress_every_s))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(set(tasks))
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(set(tasks), timeout=1)
            raise
        finally:
            if psub is not None:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()
            self._loops.discard(me)
            if not me.done():
                me.set_result(None)

    async def _recreate_consumer(self, stream: str, durable: str) -> None:
        """Re-create a consumer this bus ensured, if the server no longer has it."""
        config = self._consumers.get((stream, durable))
        if config is None or not self.nc.is_connected:
            return
        try:
            await self.js.consumer_info(stream, durable)
            return  # it exists; the failure was something else (e.g. not ready yet)
        except nats.js.errors.NotFoundError:
            pass
        except Exception:  # noqa: BLE001 - can't tell; consume() backs off and retries
            return
        try:
            if stream in self._streams:
                await self._provision_one(self._streams[stream])
            await self.js.add_consumer(stream, config)
            log.warning("bus: re-created missing consumer %s/%s", stream, durable)
        except Exception as e:  # noqa: BLE001 - retried on the next failed fetch
            log.warning("bus: could not re-create consumer %s/%s: %r", stream, durable, e)

    async def _handle(
        self, stream: str, msg: Msg, handler: Handler, in_progress_every_s: float | None
    ) -> None:
        token = otel_context.attach(trace_context(msg))
        keepalive: asyncio.Task[None] | None = None
        try:
            with _tracer.start_as_current_span(
                f"consume {stream}",
                kind=trace.SpanKind.CONSUMER,
                attributes={"messaging.system": "nats", "messaging.destination.name": msg.subject},
            ):
                if in_progress_every_s:
                    keepalive = asyncio.create_task(_keep_alive(msg, in_progress_every_s))
                try:
                    await handler(msg)
                except asyncio.CancelledError:
                    if not msg.is_acked:
                        await _settle(msg.nak, msg)
                    raise
                except Exception:
                    delivered = _num_delivered(msg)
                    log.exception(
                        "bus: handler for %s failed (delivery %s); redelivering in %gs",
                        msg.subject,
                        delivered,
                        _NAK_DELAY_S,
                    )
                    if not msg.is_acked:
                        await _settle(msg.nak, msg, delay=_NAK_DELAY_S)
                    return
                finally:
                    if keepalive is not None:
                        keepalive.cancel()
                if not msg.is_acked:
                    await _settle(msg.ack, msg)
        finally:
            otel_context.detach(token)


def _header_value(text: str) -> str:
    # A CR or LF would end the header block early and corrupt the message.
    return " ".join(text.split())[:1000]


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _keep_alive(msg: Msg, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        if msg.is_acked:
            return
        with contextlib.suppress(Exception):
            await msg.in_progress()


async def _settle(op: Callable[..., Awaitable[None]], msg: Msg, **kw: float) -> None:
    """ack/nak, logging rather than raising: a failed ack only means the message
    is redelivered after ack_wait, which at-least-once handling tolerates."""
    try:
        await op(**kw)
    except Exception as e:  # noqa: BLE001 - see docstring
        log.warning("bus: could not settle message on %s: %r", msg.subject, e)


def _num_delivered(msg: Msg) -> int | str:
    try:
        return msg.metadata.num_delivered
    except Exception:  # noqa: BLE001 - only used in a log line
        return "?"
