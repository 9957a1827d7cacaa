"""``thaw.Dict`` and ``thaw.Queue``: every operation, carried out on
JetStream (a key-value bucket per dict, a work-queue stream per queue).

One entry point, ``execute``, for both ways an operation arrives: ``POST
/v1/stores`` (JSON) from local code and other languages, and
``contract.STORE_REQUEST`` (msgpack) from containers through their agents,
so NATS access to the buckets and streams stays with the gateway. Keys and
values are bytes the SDK encoded; nothing here unpickles.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable

import msgspec
from aiohttp import web
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from thaw_core import contract
from thaw_core.bus import Bus
from thaw_core.bus.stores import StoreMissing, ack_token
from thaw_core.schema import check_name
from thaw_core.schema.stores import (
    DictClear,
    DictDelete,
    DictEnsure,
    DictGet,
    DictLen,
    DictList,
    DictPop,
    DictPut,
    DictScan,
    DictUpdate,
    QueueAck,
    QueueClear,
    QueueDelete,
    QueueEnsure,
    QueueGet,
    QueueLen,
    QueueList,
    QueuePeek,
    QueuePut,
    StoreInfo,
    StoreOp,
    StoreReply,
)
from thaw_core.tasks import Background

from thaw_gateway.auth import PRINCIPAL, check_scope
from thaw_gateway.bodies import read_whole
from thaw_gateway.deploy import SHA256_RE, _put_upload
from thaw_gateway.errors import ApiError, bad_request, conflict, json_response, not_found, too_large
from thaw_gateway.state import gateway

log = logging.getLogger("thaw.gateway.stores")

# A key as the key-value store takes it: subject tokens of its alphabet.
_KEY_RE = re.compile(r"^[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*$")
MAX_KEY_BYTES = 1024
# One answer carries at most this much: it travels as one NATS message to a container.
REPLY_BYTES = 768 * 1024
MAX_GET_ITEMS = 1000
MAX_PEEK_ITEMS = 1000
# A blocking get waits this long at most per request; the SDK asks again.
MAX_WAIT_S = 50.0

_json_op = msgspec.json.Decoder(StoreOp)
_msgpack_op = msgspec.msgpack.Decoder(StoreOp)
_msgpack = msgspec.msgpack.Encoder()


def _name(kind: str, name: str) -> str:
    try:
        return check_name(kind, name)
    except ValueError as e:
        raise bad_request(str(e)) from None


def _key(key: str) -> str:
    if len(key) > MAX_KEY_BYTES:
        raise too_large(f"a Dict key is at most {MAX_KEY_BYTES} bytes once encoded; got {len(key)}")
    if not _KEY_RE.match(key):
        raise bad_request(f"{key[:80]!r} is not an encoded Dict key (see thaw.dict)")
    return key


def _value(value: bytes, what: str) -> bytes:
    limit = contract.STORE_MAX_VALUE_BYTES
    if len(value) > limit:
        raise too_large(
            f"a {what} is at most {limit} bytes ({limit // 1024} KiB) once serialized;"
            f" got {len(value)}: store large data in a Volume and put its path here"
        )
    return value


def _bucket(name: str) -> str:
    return contract.dict_bucket(_name("dict", name))


def _queue(name: str) -> contract.StreamSpec:
    return contract.queue_stream(_name("queue", name))


def _partition(partition: str | None) -> str | None:
    return None if partition is None else _name("queue partition", partition)


async def execute(bus: Bus, op: StoreOp) -> StoreReply:
    """Carry ``op`` out. ``ApiError`` says why it cannot be."""
    try:
        return await _execute(bus, op)
    except StoreMissing:
        kind = "queue" if type(op).__name__.startswith("Queue") else "dict"
        name = getattr(op, "name", "")
        raise not_found(
            f"no {kind} {name!r}: thaw.{kind.capitalize()}.from_name({name!r},"
            " create_if_missing=True) makes it"
        ) from None


async def _execute(bus: Bus, op: StoreOp) -> StoreReply:
    match op:
        case DictEnsure(name=name, create_if_missing=create, exclusive=exclusive):
            return await _ensured("dict", name, exclusive, bus.kv_ensure(_bucket(name), create=create))
        case DictDelete(name=name):
            await bus.kv_delete(_bucket(name))
            return StoreReply()
        case DictList():
            return await _listing(bus, contract.kv_stream(contract.DICT_BUCKET_PREFIX))
        case DictGet(name=name, key=key):
            value = await bus.kv_get(_bucket(name), _key(key))
            return StoreReply(found=value is not None, value=value or b"")
        case DictPut(name=name, key=key, value=value, skip_if_exists=skip):
            stored = await bus.kv_put(
                _bucket(name), _key(key), _value(value, "Dict value"), only_new=skip
            )
            return StoreReply(found=not stored, count=int(stored))
        case DictUpdate(name=name, items=items):
            bucket = _bucket(name)
            checked = [(_key(k), _value(v, "Dict value")) for k, v in items]
            for k, v in checked:
                await bus.kv_put(bucket, k, v)
            return StoreReply(count=len(checked))
        case DictPop(name=name, key=key):
            bucket, checked_key = _bucket(name), _key(key)
            value = await bus.kv_get(bucket, checked_key)
            if value is not None:
                await bus.kv_remove(bucket, checked_key)
            return StoreReply(found=value is not None, value=value or b"")
        case DictLen(name=name):
            stat = await bus.stream_stat(contract.kv_stream(_bucket(name)))
            return StoreReply(count=stat.messages)
        case DictClear(name=name):
            stream = contract.kv_stream(_bucket(name))
            count = (await bus.stream_stat(stream)).messages
            await bus.stream_purge(stream)
            return StoreReply(count=count)
        case DictScan(name=name, cursor=cursor, values=values):
            entries, after = await bus.kv_scan(_bucket(name), cursor, REPLY_BYTES)
            return StoreReply(
                keys=[k for k, _ in entries],
                values=[v for _, v in entries] if values else [],
                cursor=after,
            )
        case _:
            return await _queue_op(bus, op)


async def _ensured(kind: str, name: str, exclusive: bool, ensure: Awaitable[bool]) -> StoreReply:
    """A Dict's or a Queue's ensure: whether it existed (``ensure``'s answer),
    a conflict if it did and the caller wanted it new (``exclusive``)."""
    existed = await ensure
    if existed and exclusive:
        raise conflict(f"{kind} {name!r} exists")
    return StoreReply(found=existed)


async def _queue_op(bus: Bus, op: StoreOp) -> StoreReply:
    match op:
        case QueueEnsure(name=name, create_if_missing=create, exclusive=exclusive):
            ensure = bus.stream_ensure(_queue(name), create=create)
            return await _ensured("queue", name, exclusive, ensure)
        case QueueDelete(name=name):
            await bus.stream_delete(_queue(name).name)
            return StoreReply()
        case QueueList():
            return await _listing(bus, contract.QUEUE_STREAM_PREFIX)
        case QueuePut(name=name, values=values, partition=partition):
            _queue(name)
            subject = contract.queue_subject(name, _partition(partition))
            await bus.stream_put(subject, [_value(v, "Queue item") for v in values])
            return StoreReply(count=len(values))
        case QueueGet():
            return await _get(bus, op)
        case QueueAck(tokens=tokens, ok=ok):
            await _settle_all(bus, tokens, ok)
            return StoreReply(count=len(tokens))
        case QueueLen(name=name, partition=partition, total=total):
            spec = _queue(name)
            subject = None if total else contract.queue_subject(name, _partition(partition))
            return StoreReply(count=(await bus.stream_stat(spec.name, subject)).messages)
        case QueueClear(name=name, partition=partition, all=everything):
            spec = _queue(name)
            subject = None if everything else contract.queue_subject(name, _partition(partition))
            await bus.stream_purge(spec.name, subject)
            return StoreReply()
        case QueuePeek(name=name, partition=partition, cursor=cursor, limit=limit):
            spec = _queue(name)
            subject = contract.queue_subject(name, _partition(partition))
            values, after = await bus.stream_peek(
                spec.name, subject, cursor, max(1, min(limit, MAX_PEEK_ITEMS))
            )
            return StoreReply(values=values, cursor=after)
        case _:
            raise bad_request(f"unknown store operation {type(op).__name__}")


async def _listing(bus: Bus, prefix: str) -> StoreReply:
    """Every dict (queue): the streams named ``prefix`` + its name."""
    found = await bus.streams_named(prefix)
    return StoreReply(infos=[StoreInfo(s.name[len(prefix) :], s.messages, s.bytes) for s in found])


async def _get(bus: Bus, op: QueueGet) -> StoreReply:
    await _settle_all(bus, op.ack, True)
    consumer = contract.queue_consumer(_queue(op.name).name[len(contract.QUEUE_STREAM_PREFIX) :],
                                       _partition(op.partition))  # fmt: skip
    n = max(1, min(op.n, MAX_GET_ITEMS))
    msgs = await bus.take(consumer, n, min(max(op.timeout_s, 0.0), MAX_WAIT_S))
    kept: list[Msg] = []
    size = 0
    for m in msgs:
        size += len(m.data or b"")
        if kept and size > REPLY_BYTES:
            await bus.settle_token(ack_token(m), False)  # for the next getter
            continue
        kept.append(m)
    tokens = [ack_token(m) for m in kept]
    if not op.lease:
        await _settle_all(bus, tokens, True)
        tokens = []
    return StoreReply(values=[m.data or b"" for m in kept], tokens=tokens, count=len(kept))


# ---------------------------------------------------------------- HTTP and NATS


async def store_call(request: web.Request) -> web.StreamResponse:
    try:
        op = _json_op.decode(await read_whole(request))
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise bad_request(f"not a store operation: {e}") from None
    check_scope(request[PRINCIPAL], "read" if _reads_only(op) else "deploy", type(op).__name__)
    bus = gateway(request).bus
    if not (isinstance(op, QueueGet) and not op.lease):
        return json_response(await execute(bus, op))
    # Items taken over HTTP are acked once the answer is written, so a client
    # gone meanwhile (a Ctrl-C during a blocking get) loses none: they go to
    # the next getter.
    reply = await execute(bus, msgspec.structs.replace(op, lease=True))
    resp = json_response(msgspec.structs.replace(reply, tokens=[]))
    try:
        await resp.prepare(request)
        await resp.write_eof()
    except (ConnectionError, RuntimeError):
        await _settle_all(bus, reply.tokens, False)
        raise
    await _settle_all(bus, reply.tokens, True)
    return resp


async def _settle_all(bus: Bus, tokens: list[str], ok: bool) -> None:
    for t in tokens:
        await bus.settle_token(t, ok)


def _reads_only(op: StoreOp) -> bool:
    """An operation that changes nothing (a read token may do it)."""
    if isinstance(op, DictEnsure | QueueEnsure):
        return not op.create_if_missing
    return isinstance(op, DictGet | DictLen | DictScan | DictList | QueueLen | QueuePeek | QueueList)


async def serve_stores(bus: Bus, tasks: Background) -> Subscription:
    """Answer containers' store operations relayed by their agents (one
    gateway of the queue group each), each in a task of its own: a blocking
    queue get must not hold up the others."""

    async def on_request(msg: Msg) -> None:
        if msg.reply:
            tasks.spawn(answer(msg), "store-request")

    async def answer(msg: Msg) -> None:
        try:
            reply = await execute(bus, _msgpack_op.decode(msg.data))
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            reply = StoreReply(error=f"not a store operation: {e}", code="bad_request")
        except ApiError as e:
            code = (
                e.code
                if e.code in ("bad_request", "not_found", "conflict", "payload_too_large")
                else ""
            )
            reply = StoreReply(error=e.message, code=code)  # type: ignore[arg-type]
        await msg.respond(_msgpack.encode(reply))

    return await bus.serve(contract.STORE_REQUEST, on_request, queue=contract.STORE_REQUEST)


# ---------------------------------------------------------------- large values


async def put_value(request: web.Request) -> web.Response:
    """A Dict value or Queue item over ``STORE_MAX_VALUE_BYTES``, kept in the blob store."""
    return await _put_upload(request, contract.store_value_key, "large store value")


async def get_value(request: web.Request) -> web.Response:
    sha = request.match_info["sha256"]
    if not SHA256_RE.match(sha):
        raise bad_request(f"{sha!r} is not a sha256: expected 64 lowercase hex digits")
    blob = gateway(request).blob
    if await blob.stat(contract.store_value_key(sha)) is None:
        raise not_found(f"no large store value {sha}")
    data = await blob.get(contract.store_value_key(sha), sha256=sha)
    return web.Response(body=data, content_type="application/octet-stream")
