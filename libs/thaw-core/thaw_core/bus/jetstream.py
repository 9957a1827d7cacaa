"""JetStream: the streams and durable consumers a service provisions, what
they store, and publishing into them (``Streams``, the base of ``Bus``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from thaw_core import schema
from thaw_core.contract import STREAMS, ConsumerSpec, StreamSpec
from thaw_core.telemetry import recording

_tracer = trace.get_tracer("thaw.bus")
log = logging.getLogger("thaw_core.bus")

MSG_ID_HEADER = "Nats-Msg-Id"
# What a publish meets while a clustered stream has no leader.
LEADERLESS = (nats.js.errors.NoStreamResponseError, nats.errors.NoRespondersError)
LEADERLESS_RETRY_S = 0.25
# How long a single publish waits for a stream leader to be elected.
LEADERLESS_WAIT_S = 10.0


def _stream_config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy(spec.retention),
        # File storage: inputs and results must survive a nats-server restart.
        storage=StorageType.FILE,
        num_replicas=replicas,
        # 0 means "no limit" to the server.
        max_age=spec.max_age_s or 0,
        duplicate_window=spec.duplicate_window_s,
        max_msg_size=spec.max_msg_size if spec.max_msg_size is not None else -1,
        max_msgs=spec.max_msgs if spec.max_msgs is not None else -1,
        max_bytes=spec.max_bytes if spec.max_bytes is not None else -1,
        discard=DiscardPolicy(spec.discard),
        max_consumers=spec.max_consumers,
    )


def _subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` (itself possibly ending in a wildcard) falls under
    the stream subject ``pattern``."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got) or (token != "*" and token != got[i]):
            return False
    return len(want) == len(got)


class BatchPublishError(Exception):
    """``Bus.publish_batch`` failed part way: ``taken`` of ``total`` were stored."""

    def __init__(self, taken: int, total: int, cause: BaseException) -> None:
        super().__init__(f"the bus took {taken} of {total} messages before failing ({cause!r})")
        self.taken = taken
        self.total = total


def deliver_refused_acks(js: Any) -> None:
    """Make a refused ``publish_async`` fail its future with the server's error.

    nats-py (2.16) reads an async publish's ack with ``APIError.from_error``,
    which raises instead of returning: the error escapes its reply handler and
    the future is never done, so a batch into a full stream waited for its
    timeout and read as "no answer". Its handler is wrapped (before the first
    publish_async subscribes it) to hand the error to the waiting future.
    ``tests/integration/test_bus.py`` checks a full stream's batch is refused."""
    handle = js._handle_async_reply

    async def handle_async_reply(msg: Any) -> None:
        try:
            await handle(msg)
        except nats.js.errors.APIError as e:
            # The token as nats-py cuts it from the reply subject.
            token = msg.subject[len(js._nc._inbox_prefix) + 22 + 2 :]
            future = js._publish_async_futures.get(token)
            if future is not None and not future.done():
                future.set_exception(e)

    js._handle_async_reply = handle_async_reply


def refusal(error: BaseException) -> str | None:
    """Why the server refused a publish, in its own words (a stream at its
    limits: "maximum messages exceeded"), or None when the publish got no
    answer at all (a timeout, a lost connection). ``error`` is what
    ``publish`` or ``publish_batch`` raised."""
    cause = error.__cause__ if isinstance(error, BatchPublishError) else error
    if isinstance(cause, nats.js.errors.APIError):
        return cause.description or str(cause)
    return None


class ConsumerState(NamedTuple):
    """What a durable consumer holds now."""

    filter_subject: str | None
    # Stored, not yet delivered.
    pending: int
    # Delivered, not yet acked (running).
    ack_pending: int


class StoredMsg(NamedTuple):
    """One message as a stream stores it."""

    seq: int
    data: bytes
    # Unix time the stream stored it.
    stored_at: float


def payload(msg: schema.Message | bytes) -> bytes:
    if isinstance(msg, (bytes, bytearray, memoryview)):
        return bytes(msg)
    return schema.encode(msg)


def with_trace(headers: dict[str, str] | None) -> dict[str, str] | None:
    """``headers`` plus the current trace context; None when both are empty, so
    that untraced messages are sent as plain PUB without a header block."""
    out = dict(headers) if headers else {}
    context = otel_context.get_current()
    if context:  # empty: nothing to carry (untraced, no caller's traceparent)
        propagate.inject(out, context)
    return out or None


class Streams:
    """The JetStream half of ``Bus``."""

    nc: Client
    js: JetStreamContext

    def __init__(self, *, replicas: int = 1) -> None:
        # How many servers keep each stream and bucket: 1 on a single server,
        # 3 on a cluster (Settings.nats_replicas); every stream and bucket
        # this bus makes takes it from here.
        self.replicas = replicas
        self._streams: dict[str, StreamSpec] = {}
        self._consumers: dict[tuple[str, str], ConsumerConfig] = {}

    # ------------------------------------------------------------ provisioning

    async def provision(self, streams: Iterable[StreamSpec] = STREAMS) -> None:
        """Create each stream, or bring an existing one to its spec."""
        for spec in streams:
            await self._provision_one(spec)

    async def _provision_one(self, spec: StreamSpec) -> None:
        config = _stream_config(spec, self.replicas)
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
        consumer: ConsumerSpec | str,
        durable: str = "",
        *,
        filter_subject: str | None = None,
        ack_wait_s: float = 30,
        max_deliver: int = -1,
        max_ack_pending: int = 1000,
    ) -> None:
        """Create the durable pull consumer, or update it to these settings:
        a ``ConsumerSpec`` (``thaw_core.contract``), or a stream name with the
        consumer's settings."""
        spec = (
            consumer
            if isinstance(consumer, ConsumerSpec)
            else ConsumerSpec(
                stream=consumer,
                durable=durable,
                filter_subject=filter_subject,
                ack_wait_s=ack_wait_s,
                max_deliver=max_deliver,
            )
        )
        config = ConsumerConfig(
            name=spec.durable,
            durable_name=spec.durable,
            filter_subject=spec.filter_subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait_s,
            max_deliver=spec.max_deliver,
            max_ack_pending=max_ack_pending,
        )
        # The server's CONSUMER.CREATE without an action is create-or-update, so
        # this is idempotent and also applies changed editable settings.
        await self.js.add_consumer(spec.stream, config)
        self._consumers[(spec.stream, spec.durable)] = config

    async def recreate_consumer(self, stream: str, durable: str) -> None:
        """Re-create a consumer this bus ensured, if the server no longer has it."""
        config = self._consumers.get((stream, durable))
        if config is None or not self.nc.is_connected:
            return
        try:
            await self.js.consumer_info(stream, durable)
            return  # it exists; the failure was something else (e.g. not ready yet)
        except nats.js.errors.NotFoundError:
            pass
        except Exception:  # noqa: BLE001 - can't tell; the pull loop backs off and retries
            return
        try:
            if stream in self._streams:
                await self._provision_one(self._streams[stream])
            await self.js.add_consumer(stream, config)
            log.warning("bus: re-created missing consumer %s/%s", stream, durable)
        except Exception as e:  # noqa: BLE001 - retried on the next failed fetch
            log.warning("bus: could not re-create consumer %s/%s: %r", stream, durable, e)

    # ------------------------------------------------------------ what is stored

    def stream_of(self, subject: str) -> str:
        """The name of the stream that stores ``subject``."""
        for spec in (*self._streams.values(), *STREAMS):
            if any(_subject_matches(p, subject) for p in spec.subjects):
                return spec.name
        raise ValueError(f"no stream stores {subject!r}")

    async def last(self, subject: str) -> bytes | None:
        """The payload of the last message stored on ``subject``; None when
        there is none."""
        try:
            raw = await self.js.get_last_msg(self.stream_of(subject), subject)
        except nats.js.errors.NotFoundError:
            return None
        return raw.data or b""

    async def stored_subjects(self, subject: str) -> dict[str, int]:
        """How many messages are stored on each subject under ``subject``
        (wildcards allowed); subjects with none are left out."""
        info = await self.js.stream_info(self.stream_of(subject), subjects_filter=subject)
        return dict(info.state.subjects or {})

    async def stored_on(self, subject: str, *, limit: int = 1024) -> list[bytes]:
        """The payloads stored on ``subject`` (no wildcards), oldest first, at
        most ``limit``: for a reader that wants more than the last one (the
        newest result whose proof verifies, when the last one is forged)."""
        found: list[bytes] = []
        seq = 0
        while len(found) < limit and (stored := await self.next_stored(subject, seq)) is not None:
            found.append(stored.data)
            seq = stored.seq
        return found

    async def stored_count(self, subject: str) -> int:
        """How many messages are stored under ``subject`` (wildcards allowed)."""
        return sum((await self.stored_subjects(subject)).values())

    async def next_stored(self, subject: str, after_seq: int = 0) -> StoredMsg | None:
        """The first message stored on ``subject`` after stream sequence
        ``after_seq``, whether or not a consumer holds it; None when there is none."""
        try:
            raw = await self.js.get_msg(
                self.stream_of(subject), seq=after_seq + 1, subject=subject, next=True
            )
        except nats.js.errors.NotFoundError:
            return None
        stored_at = raw.time.timestamp() if raw.time is not None else 0.0
        return StoredMsg(raw.seq or 0, raw.data or b"", stored_at)

    async def delete_stored(self, subject: str, seq: int) -> None:
        """Remove the message stored at ``seq`` of ``subject``'s stream (gone already: fine)."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.delete_msg(self.stream_of(subject), seq)

    async def consumer_state(self, consumer: ConsumerSpec) -> ConsumerState | None:
        """What ``consumer`` holds now; None when the server has no such consumer."""
        try:
            info = await self.js.consumer_info(consumer.stream, consumer.durable)
        except nats.js.errors.NotFoundError:
            return None
        return ConsumerState(
            filter_subject=info.config.filter_subject,
            pending=info.num_pending or 0,
            ack_pending=info.num_ack_pending or 0,
        )

    async def follow(self, subject: str) -> JetStreamContext.PushSubscription:
        """Every message stored on ``subject``, in order, then new ones as they
        come (an ephemeral ordered consumer, recreated by the client on a gap).
        Read with ``next_msg``; ``unsubscribe`` when done."""
        return await self.js.subscribe(
            subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )

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
            hdrs[MSG_ID_HEADER] = msg_id
        if not recording():
            return await self._publish_through_elections(subject, payload(msg), with_trace(hdrs))
        # A span of its own, so a trace shows the hop through the bus: its
        # consumers' spans are children of this one (its context is in the headers).
        with _tracer.start_as_current_span(
            "bus publish",
            kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        ):
            return await self._publish_through_elections(subject, payload(msg), with_trace(hdrs))

    async def _publish_through_elections(
        self, subject: str, data: bytes, headers: dict[str, str] | None
    ) -> PubAck:
        deadline = 0.0  # set at the first refusal: nothing more on the hot path
        while True:
            try:
                return await self.js.publish(subject, data, headers=headers)
            except LEADERLESS:
                # A cluster electing the stream's leader: seconds.
                now = asyncio.get_running_loop().time()
                deadline = deadline or now + LEADERLESS_WAIT_S
                if now + LEADERLESS_RETRY_S > deadline:
                    raise
                await asyncio.sleep(LEADERLESS_RETRY_S)

    async def publish_batch(
        self, subject: str, items: Sequence[tuple[str, bytes]], *, timeout_s: float
    ) -> None:
        """Store many ``(msg_id, payload)`` pipelined: every publish is sent
        before any ack is awaited (and without yielding to the loop between
        them, so they leave in few writes). ``BatchPublishError`` when not all
        were stored within ``timeout_s``; publishing the whole batch again is
        safe, since the msg-ids drop what was stored already, and is done here
        while no stream answers (a cluster electing a stream leader)."""
        trace_headers: dict[str, str] = {}
        propagate.inject(trace_headers)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                return await self._publish_batch_once(subject, items, trace_headers, deadline)
            except BatchPublishError as e:
                # No stream answered: on a cluster, its leader died and the
                # others are electing a new one (seconds). The msg-ids make
                # publishing the whole batch again safe.
                left = deadline - asyncio.get_running_loop().time()
                if not isinstance(e.__cause__, LEADERLESS) or left < LEADERLESS_RETRY_S:
                    raise
                log.info("bus: no stream answered for %s (%r); publishing again", subject, e)
                await asyncio.sleep(LEADERLESS_RETRY_S)

    async def _publish_batch_once(
        self,
        subject: str,
        items: Sequence[tuple[str, bytes]],
        trace_headers: dict[str, str],
        deadline: float,
    ) -> None:
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout_at(deadline):
                for msg_id, data in items:
                    futures.append(
                        await self.js.publish_async(
                            subject, data, headers={**trace_headers, MSG_ID_HEADER: msg_id}
                        )
                    )
                await asyncio.gather(*futures)
        except (nats.errors.Error, TimeoutError) as e:
            for f in futures:
                f.cancel()  # frees their slots in the client's pending-publish window
            taken = sum(1 for f in futures if f.done() and not f.cancelled() and not f.exception())
            raise BatchPublishError(taken, len(items), e) from e
