"""Key-value buckets (``thaw.Dict``) and work-queue streams (``thaw.Queue``):
the JetStream half of ``Bus`` that the gateway's store operations use.

A key is removed by purging its subject rather than with a KV delete marker,
so the bucket's stream holds exactly one message per live key: its length is
the stream's message count and a scan walks the stream in order.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from thaw_core.contract import (
    QUEUE_ACK_PREFIX,
    STORE_MAX_VALUE_BYTES,
    ConsumerSpec,
    StreamSpec,
    kv_stream,
    kv_subject,
)

# How long a scan waits for the next message it knows is stored.
_SCAN_STEP_S = 5.0


class StoreMissing(LookupError):
    """The bucket or stream does not exist."""


class StoredStream(NamedTuple):
    name: str
    messages: int
    bytes: int


class Stores:
    """Buckets and queue streams over one connection (a mixin of ``Bus``)."""

    nc: Client
    js: JetStreamContext

    def __init__(self) -> None:
        self._kv: dict[str, KeyValue] = {}
        # (stream, durable) of the queue consumers made or updated by this bus.
        self._consumers_made: set[tuple[str, str]] = set()

    # ------------------------------------------------------------ buckets

    async def kv_ensure(self, bucket: str, *, create: bool) -> bool:
        """True when the bucket existed; made first (when ``create``) otherwise."""
        try:
            self._kv[bucket] = await self.js.key_value(bucket)
            return True
        except nats.js.errors.BucketNotFoundError:
            if not create:
                raise StoreMissing(bucket) from None
        self._kv[bucket] = await self.js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=1,
                storage=StorageType.FILE,
                replicas=self.replicas,
                max_value_size=STORE_MAX_VALUE_BYTES,
            )
        )
        return False

    async def _bucket(self, bucket: str) -> KeyValue:
        kv = self._kv.get(bucket)
        if kv is None:
            await self.kv_ensure(bucket, create=False)
            kv = self._kv[bucket]
        return kv

    async def kv_delete(self, bucket: str) -> None:
        self._kv.pop(bucket, None)
        await self.stream_delete(kv_stream(bucket))

    async def kv_get(self, bucket: str, key: str) -> bytes | None:
        kv = await self._bucket(bucket)
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.js.errors.NotFoundError, nats.errors.NoRespondersError):
            # The bucket went since its handle was made (a direct get finds no stream).
            self._kv.pop(bucket, None)
            raise StoreMissing(bucket) from None
        return entry.value or b""

    async def kv_put(self, bucket: str, key: str, value: bytes, *, only_new: bool = False) -> bool:
        """Store ``value`` under ``key``; with ``only_new``, False (and nothing
        stored) when the key is set."""
        kv = await self._bucket(bucket)
        try:
            if only_new:
                await kv.create(key, value)
            else:
                await kv.put(key, value)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except nats.errors.NoRespondersError:
            self._kv.pop(bucket, None)
            raise StoreMissing(bucket) from None
        return True

    async def kv_remove(self, bucket: str, key: str) -> None:
        """Forget ``key`` (no delete marker is left behind)."""
        await self.js.purge_stream(kv_stream(bucket), subject=kv_subject(bucket, key))

    async def kv_scan(
        self, bucket: str, cursor: int, max_bytes: int
    ) -> tuple[list[tuple[str, bytes]], int]:
        """Entries from stream position ``cursor`` on, up to ``max_bytes`` of
        them; and where the next page starts (0: none left)."""
        try:
            state = (await self.js.stream_info(kv_stream(bucket))).state
        except nats.js.errors.NotFoundError:
            raise StoreMissing(bucket) from None
        last = state.last_seq if state.messages else 0
        if not last or cursor > last:
            return [], 0
        prefix = kv_subject(bucket, "")
        sub = await self.js.subscribe(
            prefix + ">",
            ordered_consumer=True,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(cursor, 1)
            ),
        )
        got: list[tuple[str, bytes]] = []
        size = 0
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=_SCAN_STEP_S)
                except nats.errors.TimeoutError:
                    return got, 0  # what was there is gone (purged meanwhile)
                seq = msg.metadata.sequence.stream
                got.append((msg.subject[len(prefix) :], msg.data or b""))
                size += len(msg.data or b"") + len(msg.subject)
                if seq >= last:
                    return got, 0
                if size >= max_bytes:
                    return got, seq + 1
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # ------------------------------------------------------------ streams

    async def stream_ensure(self, spec: StreamSpec, *, create: bool) -> bool:
        """True when the stream existed; made first (when ``create``) otherwise."""
        try:
            await self.js.stream_info(spec.name)
            return True
        except nats.js.errors.NotFoundError:
            if not create:
                raise StoreMissing(spec.name) from None
        await self.provision([spec])
        return False

    async def stream_delete(self, name: str) -> None:
        self._consumers_made = {k for k in self._consumers_made if k[0] != name}
        try:
            await self.js.delete_stream(name)
        except nats.js.errors.NotFoundError:
            raise StoreMissing(name) from None

    async def streams_named(self, prefix: str) -> list[StoredStream]:
        """Every stream whose name starts with ``prefix``."""
        found: list[StoredStream] = []
        for info in await self.js.streams_info():
            name = info.config.name or ""
            if name.startswith(prefix):
                found.append(StoredStream(name, info.state.messages, info.state.bytes))
        return sorted(found)

    async def stream_stat(self, name: str, subject: str | None = None) -> StoredStream:
        """How many messages (bytes) the stream holds, or those on ``subject``."""
        try:
            info = await self.js.stream_info(name, subjects_filter=subject)
        except nats.js.errors.NotFoundError:
            raise StoreMissing(name) from None
        if subject is None:
            return StoredStream(name, info.state.messages, info.state.bytes)
        return StoredStream(name, sum((info.state.subjects or {}).values()), 0)

    async def stream_purge(self, name: str, subject: str | None = None) -> None:
        try:
            await self.js.purge_stream(name, subject=subject)
        except nats.js.errors.NotFoundError:
            raise StoreMissing(name) from None

    async def stream_put(self, subject: str, values: list[bytes]) -> None:
        """Store every value on ``subject``, pipelined, in order."""
        futures = [await self.js.publish_async(subject, v) for v in values]
        for f in futures:
            try:
                await f
            # Pipelined publishes to no stream end as "no response from stream".
            except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
                raise StoreMissing(subject) from None

    async def stream_peek(
        self, name: str, subject: str, cursor: int, limit: int
    ) -> tuple[list[bytes], int]:
        """Up to ``limit`` payloads on ``subject`` from position ``cursor``, and
        the position after the last (0 when there was none)."""
        got: list[bytes] = []
        seq = max(cursor, 1)
        while len(got) < limit:
            try:
                raw = await self.js.get_msg(name, seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return got, seq if got else 0
            got.append(raw.data or b"")
            seq = (raw.seq or seq) + 1
        return got, seq

    async def take(self, consumer: ConsumerSpec, n: int, timeout_s: float) -> list[Msg]:
        """Up to ``n`` messages of ``consumer``, waiting up to ``timeout_s`` for
        the first; unacked. A subscription of its own per call, so that a
        getter that waits never holds up one that asks without waiting."""
        key = (consumer.stream, consumer.durable)
        for attempt in (1, 2):
            try:
                if key not in self._consumers_made:
                    await self.ensure_consumer(consumer)  # type: ignore[attr-defined]
                    self._consumers_made.add(key)
                psub = await self.js.pull_subscribe_bind(
                    durable=consumer.durable, stream=consumer.stream
                )
            except nats.js.errors.NotFoundError:
                raise StoreMissing(consumer.stream) from None
            try:
                return await psub.fetch(n, timeout=max(timeout_s, 0.05))
            except (nats.errors.TimeoutError, TimeoutError):
                return []
            except nats.js.errors.NotFoundError:
                # The stream or its consumer went (a delete, a lost store): once more, afresh.
                self._consumers_made.discard(key)
                if attempt == 2:
                    raise StoreMissing(consumer.stream) from None
            finally:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()
        return []

    async def settle_token(self, token: str, ok: bool) -> bool:
        """Ack (``ok``) or nak a queue item by the token ``take`` gave it (its
        reply subject). False for a token that is not a queue item's."""
        if not token.startswith(QUEUE_ACK_PREFIX) or any(c in token for c in " *>\r\n"):
            return False
        await self.nc.publish(token, b"+ACK" if ok else b"-NAK")
        return True


def ack_token(msg: Msg) -> str:
    return msg.reply or ""


__all__ = ["StoreMissing", "StoredStream", "Stores", "ack_token"]
