"""``thaw.Dict`` / ``thaw.Queue`` operations inside a container: a
``StoreRequest`` to the agent over the socket, which relays it to the
gateway; the ``StoreAnswer`` comes back on a reader thread and wakes the
coroutine waiting for it (on the SDK's background loop).

Queue items a container takes are leased: they stay its own until it acks
them, which it does when it takes its next item from that queue or when an
input returns (a failed input hands them back for another getter). A
container killed meanwhile never acks; its agent hands its items back when
it sees the container gone, or they go to another getter once
``contract.QUEUE_ACK_WAIT_S`` has passed.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable

import msgspec
from thaw_core.container_protocol import StoreAnswer, StoreBlob, StoreRequest
from thaw_core.schema.stores import QueueAck, StoreOp

from thaw.exception import ConnectionError
from thaw.runtime.channel import AgentChannel

_encoder = msgspec.msgpack.Encoder()


class _Calls:
    def __init__(self) -> None:
        self.channel: AgentChannel | None = None
        self._pending: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[StoreAnswer]]] = {}
        self._lock = threading.Lock()
        # Ack tokens of queue items taken and not yet done with, by queue.
        self._held: dict[str, list[str]] = {}

    def attach(self, channel: AgentChannel) -> None:
        self.channel = channel

    def answer(self, frame: StoreAnswer) -> None:
        """From a reader thread: wake whoever waits for this answer."""
        with self._lock:
            waiting = self._pending.pop(frame.request_id, None)
        if waiting is not None:
            loop, future = waiting
            loop.call_soon_threadsafe(_resolve, future, frame)

    async def call(self, op: StoreOp, timeout_s: float = 0.0) -> bytes:
        """The gateway's encoded ``StoreReply`` to ``op``."""
        return await self._ask(
            lambda rid: StoreRequest(request_id=rid, op=_encoder.encode(op), timeout_s=timeout_s)
        )

    async def blob(self, sha256: str, data: bytes = b"") -> bytes:
        """Keep ``data`` in the blob store (the agent writes it), or with no
        ``data`` read the value ``sha256`` back."""
        return await self._ask(lambda rid: StoreBlob(request_id=rid, sha256=sha256, data=data))

    async def _ask(self, frame: Callable[[str], StoreRequest | StoreBlob]) -> bytes:
        if self.channel is None:
            raise ConnectionError("this container has no connection to its agent")
        request_id = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoreAnswer] = loop.create_future()
        with self._lock:
            self._pending[request_id] = (loop, future)
        try:
            self.channel.send(frame(request_id))
            answer = await future
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        if answer.error:
            raise ConnectionError(answer.error)
        return answer.reply

    # ------------------------------------------------------------ leases

    def swap_held(self, queue: str, tokens: list[str] | None = None) -> list[str]:
        """The tokens held for ``queue`` (to ack now), replaced by ``tokens``."""
        with self._lock:
            before = self._held.pop(queue, [])
            if tokens:
                self._held[queue] = list(tokens)
        return before

    def input_ended(self, ok: bool) -> None:
        """An input returned: ack what the container holds (nak after a failure)."""
        with self._lock:
            held = [t for tokens in self._held.values() for t in tokens]
            self._held.clear()
        if held and self.channel is not None:
            op = _encoder.encode(QueueAck(tokens=held, ok=ok))
            self.channel.send(StoreRequest(request_id="", op=op))


def _resolve(future: asyncio.Future[StoreAnswer], frame: StoreAnswer) -> None:
    if not future.done():
        future.set_result(frame)


calls = _Calls()
