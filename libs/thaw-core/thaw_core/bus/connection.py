"""``Bus``: one NATS connection and its JetStream context, and every way a
service uses them (see the package docstring for the streams and the
delivery semantics)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import context as otel_context

from thaw_core import schema
from thaw_core.bus.delivery import is_delivery_reply, trace_context
from thaw_core.bus.jetstream import Streams, deliver_refused_acks, payload, with_trace
from thaw_core.bus.pull import FreeSlots, Handler, Take, consume_loop, fetch_once, pull_loop
from thaw_core.bus.stores import Stores
from thaw_core.config import NATS_CREDS_ENV, split_urls
from thaw_core.contract import ConsumerSpec
from thaw_core.nats_auth import connect_options

log = logging.getLogger("thaw_core.bus")

# Reply headers that carry a serve handler's failure back to the requester
# (the same names NATS micro services use), so a request fails fast with the
# reason instead of waiting for its timeout.
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"

# nats-py waits this long between reconnect attempts to one server. Short, since
# there is a single local server and a restart should be noticed quickly.
_RECONNECT_WAIT_S = 1.0


class BusRequestError(Exception):
    """The responder to a ``Bus.request`` failed (its handler raised)."""

    def __init__(self, subject: str, error: str, code: str = "500") -> None:
        super().__init__(f"{subject}: {code} {error}")
        self.subject = subject
        self.error = error
        self.code = code


def _header_value(text: str) -> str:
    # A CR or LF would end the header block early and corrupt the message.
    return " ".join(text.split())[:1000]


class Bus(Streams, Stores):
    """One NATS connection and its JetStream context. Create with ``connect``."""

    def __init__(self, nc: Client, *, name: str, replicas: int = 1) -> None:
        Streams.__init__(self, replicas=replicas)
        Stores.__init__(self)
        self.nc = nc
        self.js = nc.jetstream()
        deliver_refused_acks(self.js)
        self.name = name
        self._ever_connected = False
        self.closing = asyncio.Event()
        # Pull loops running on this bus; close() waits for them.
        self.loops: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------ connection

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        name: str,
        creds: Path | None = None,
        connect_timeout_s: float = 30,
        replicas: int = 1,
    ) -> Bus:
        """Connect to ``url`` (several may be given, comma-separated), logged
        in with the credential file ``creds`` (``thaw_core.nats_auth``; default:
        the one ``THAW_NATS_CREDS`` names; none: connect without, which a thaw
        nats-server refuses).

        The first connection is retried until ``connect_timeout_s`` (services
        start in any order, e.g. beside a nats-server that is still starting);
        after that the client reconnects forever, buffering publishes while it
        is away, so a NATS restart never ends a service.
        """
        bus = cls(Client(), name=name, replicas=replicas)
        servers = split_urls(url)
        creds = creds or (
            Path(os.environ[NATS_CREDS_ENV]) if os.environ.get(NATS_CREDS_ENV) else None
        )
        auth = connect_options(creds) if creds is not None else {}
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
                    **auth,
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

    @property
    def reconnects(self) -> int:
        """How often the connection was re-established: a subscriber may have
        missed messages whenever this changes."""
        return int(self.nc.stats["reconnects"])

    @property
    def max_payload(self) -> int:
        """The largest message the server takes (its ``max_payload``)."""
        return int(self.nc.max_payload)

    async def _on_error(self, e: Exception) -> None:
        # Before the first connection every refused attempt lands here; that is
        # expected while the server starts, so it is not worth a warning.
        if self._ever_connected:
            log.warning("bus %s: nats error: %r", self.name, e)
        else:
            log.debug("bus %s: connect attempt failed: %r", self.name, e)

    async def _on_disconnected(self) -> None:
        if self._ever_connected and not self.closing.is_set():
            log.warning("bus %s: disconnected from NATS; reconnecting", self.name)

    async def _on_reconnected(self) -> None:
        url = self.nc.connected_url
        log.info("bus %s: reconnected to %s", self.name, url.netloc if url else "?")

    async def _on_closed(self) -> None:
        log.info("bus %s: connection closed", self.name)

    async def close(self, *, grace_s: float = 5.0) -> None:
        """Stop every pull loop on this bus (they finish their in-flight
        handlers, up to ``grace_s``), then drain the connection: pending
        publishes and acks are flushed before it closes."""
        self.closing.set()
        if self.loops:
            await asyncio.wait(set(self.loops), timeout=grace_s)
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

    async def publish_core(
        self,
        subject: str,
        msg: schema.Message | bytes,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Fire-and-forget on plain NATS: lost if nobody listens right now."""
        await self.nc.publish(subject, payload(msg), headers=with_trace(headers))

    async def nak_delivery(self, reply: str) -> bool:
        """Nak a JetStream delivery by its reply subject, from any connection:
        how an agent hands back the inputs a previous life of it held (the
        server ignores one that is no longer pending). False for a subject that
        is not a JetStream delivery's, which is never published to."""
        if not is_delivery_reply(reply):
            return False
        await self.nc.publish(reply, b"-NAK")
        return True

    async def request(
        self, subject: str, msg: schema.Message | bytes, *, timeout_s: float = 5
    ) -> Msg:
        """Request/reply over plain NATS. Raises ``nats.errors.NoRespondersError``
        when nobody serves ``subject``, ``nats.errors.TimeoutError`` on timeout,
        and ``BusRequestError`` when the responder's handler raised."""
        reply = await self.nc.request(
            subject, payload(msg), timeout=timeout_s, headers=with_trace(None)
        )
        if reply.headers and ERROR_HEADER in reply.headers:
            raise BusRequestError(
                subject, reply.headers[ERROR_HEADER], reply.headers.get(ERROR_CODE_HEADER, "500")
            )
        return reply

    async def reply_error(self, msg: Msg, error: str, code: str = "500") -> None:
        """Answer the request ``msg`` with a failure: the requester's
        ``Bus.request`` raises it as ``BusRequestError`` at once."""
        if not msg.reply:
            return
        await self.nc.publish(
            msg.reply,
            b"",
            headers={ERROR_HEADER: _header_value(error), ERROR_CODE_HEADER: code},
        )

    # ------------------------------------------------------------ receiving

    async def subscribe(
        self,
        subject: str,
        cb: Handler | None = None,
        *,
        unbounded: bool = False,
        live: bool = True,
    ) -> Subscription:
        """A plain NATS subscription (``cb`` per message, or ``next_msg``),
        live on the server when this returns. ``unbounded``: no pending limits,
        for a callback that must never drop a message and keeps up.
        ``live=False``: returns without waiting for the server, for a caller
        that makes many and then waits once (``subscriptions_live``)."""
        limits: dict[str, int] = {"pending_msgs_limit": 0, "pending_bytes_limit": 0}
        sub = await self.nc.subscribe(subject, cb=cb, **(limits if unbounded else {}))
        if live:
            await self.subscriptions_live()
        return sub

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
                with contextlib.suppress(Exception):
                    await self.reply_error(msg, f"{type(e).__name__}: {e}")
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

    async def pull(
        self,
        consumer: ConsumerSpec,
        take: Take,
        *,
        free_slots: FreeSlots,
        slots_freed: asyncio.Event,
        batch: int = 256,
        fetch_timeout_s: float = 1.0,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Pull from ``consumer`` (created or updated first) until ``stop`` is
        set, the bus closes or ``free_slots()`` returns None, never asking for
        more than ``free_slots()`` messages; each is handed to ``take``, which
        settles it (``settle``). Whoever frees a slot sets ``slots_freed``."""
        await pull_loop(
            self,
            consumer.stream,
            consumer.durable,
            take,
            free_slots=free_slots,
            slots_freed=slots_freed,
            batch=batch,
            fetch_timeout_s=fetch_timeout_s,
            stop=stop or asyncio.Event(),
            ensure=consumer,
        )

    async def fetch(self, consumer: ConsumerSpec, count: int, *, timeout_s: float) -> list[Msg]:
        """Up to ``count`` messages from ``consumer`` (created if missing), as
        soon as one is there; none after ``timeout_s``."""
        return await fetch_once(self, consumer, count, timeout_s)

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
        still working at this interval (``KeepAlive``).
        """
        await consume_loop(
            self,
            stream,
            durable,
            handler,
            batch=batch,
            fetch_timeout_s=fetch_timeout_s,
            stop=stop or asyncio.Event(),
            max_concurrency=max_concurrency,
            in_progress_every_s=in_progress_every_s,
        )
