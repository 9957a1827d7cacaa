"""A container's ``thaw.Dict`` / ``thaw.Queue`` operations: relayed to the
gateway on ``contract.STORE_REQUEST`` and answered back over the socket.

Why relay to the gateway rather than act on JetStream here: the gateway
already carries out every store operation for local code (over HTTP), so
containers get the same checks, limits and errors, and the key-value
buckets and queue streams are reachable by one role only. The agent never
changes an operation: it passes the bytes on. It reads queue gets and acks
only to know which items each container holds leased, so that those of a
container that dies go back to the queue at once, not after
``contract.QUEUE_ACK_WAIT_S``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec
import nats.errors
from thaw_core import contract
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus, BusRequestError
from thaw_core.container_protocol import StoreAnswer, StoreBlob, StoreRequest
from thaw_core.schema.stores import QueueAck, QueueGet, StoreOp, StoreReply
from thaw_core.tasks import Background

log = logging.getLogger("thaw.agent.stores")

# On top of what an operation may wait by itself (a blocking queue get).
REPLY_MARGIN_S = 15.0

Answer = Callable[[StoreAnswer], Awaitable[None]]

_op = msgspec.msgpack.Decoder(StoreOp)
_reply = msgspec.msgpack.Decoder(StoreReply)
_encoder = msgspec.msgpack.Encoder()


class StoreRelay:
    def __init__(self, bus: Bus | None, blob: BlobStore | None = None) -> None:
        self._bus = bus
        self._blob = blob
        self._tasks = Background(log)
        # Container id -> ack tokens of the queue items it holds leased.
        self._leased: dict[str, set[str]] = {}

    def serve(self, container_id: str, request: StoreRequest, answer: Answer) -> None:
        """Relay ``request`` in the background (other frames go on)."""
        held = self._leased.setdefault(container_id, set())
        try:
            op: StoreOp | None = _op.decode(request.op)
        except (msgspec.DecodeError, msgspec.ValidationError):
            op = None  # the gateway tells the container what is wrong with it
        match op:
            # Settled from now on, before the relay: never handed back at the container's end.
            case QueueAck(tokens=done) | QueueGet(ack=done):
                held.difference_update(done)
        leasing = isinstance(op, QueueGet) and op.lease
        self._tasks.spawn(
            self._relay(container_id if leasing else "", request, answer), "store-relay"
        )

    def serve_blob(self, request: StoreBlob, answer: Answer) -> None:
        """Keep or read back a large value (the agent holds the blob store)."""
        self._tasks.spawn(self._blob_io(request, answer), "store-blob")

    async def _blob_io(self, request: StoreBlob, answer: Answer) -> None:
        rid = request.request_id
        try:
            if self._blob is None:
                raise RuntimeError("this agent has no blob store")
            if len(request.sha256) != 64 or not all(
                c in "0123456789abcdef" for c in request.sha256
            ):
                raise ValueError(f"{request.sha256[:80]!r} is not a sha256")
            key = contract.store_value_key(request.sha256)
            if request.data:
                await self._blob.put(key, request.data, sha256=request.sha256)
                reply = StoreAnswer(request_id=rid)
            else:
                reply = StoreAnswer(
                    request_id=rid, reply=await self._blob.get(key, sha256=request.sha256)
                )
        except Exception as e:  # noqa: BLE001 - the caller in the container learns why
            reply = StoreAnswer(request_id=rid, error=f"large value {request.sha256[:12]}: {e}")
        with contextlib.suppress(Exception):
            await answer(reply)

    def release(self, container_id: str) -> None:
        """The container is gone: what it held leased goes to other getters now."""
        tokens = self._leased.pop(container_id, set())
        if tokens:
            op = _encoder.encode(QueueAck(tokens=sorted(tokens), ok=False))
            self._tasks.spawn(
                self._relay("", StoreRequest(request_id="", op=op), _nobody), "store-release"
            )

    def _took(self, container_id: str, reply: bytes) -> None:
        """A leased get's answer: the container holds what it took (unless it
        is gone already; those items return after the ack wait)."""
        held = self._leased.get(container_id)
        if held is None:
            return
        try:
            held.update(_reply.decode(reply).tokens)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass

    async def _relay(self, container_id: str, request: StoreRequest, answer: Answer) -> None:
        reply = StoreAnswer(request_id=request.request_id)
        if self._bus is None:
            reply = StoreAnswer(request_id=request.request_id, error="this agent has no bus")
        else:
            try:
                got = await self._bus.request(
                    contract.STORE_REQUEST,
                    request.op,
                    timeout_s=request.timeout_s + REPLY_MARGIN_S,
                )
                reply = StoreAnswer(request_id=request.request_id, reply=got.data)
                if container_id:
                    self._took(container_id, got.data)
            except nats.errors.NoRespondersError:
                reply = StoreAnswer(
                    request_id=request.request_id, error="no gateway is serving Dict/Queue requests"
                )
            except (nats.errors.TimeoutError, TimeoutError):
                reply = StoreAnswer(
                    request_id=request.request_id, error="the gateway did not answer in time"
                )
            except BusRequestError as e:
                reply = StoreAnswer(request_id=request.request_id, error=e.error)
        if not request.request_id:
            if reply.error:
                log.warning("store request without answer failed: %s", reply.error)
            return
        with contextlib.suppress(Exception):  # the container may be gone: nobody to tell
            await answer(reply)

    async def close(self) -> None:
        for container_id in list(self._leased):
            self.release(container_id)
        await self._tasks.close(1.0)


async def _nobody(answer: StoreAnswer) -> None:
    pass
