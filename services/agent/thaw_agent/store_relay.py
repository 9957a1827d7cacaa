"""A container's ``thaw.Dict`` / ``thaw.Queue`` operations: relayed to the
gateway on ``contract.STORE_REQUEST`` and answered back over the socket.

Why relay to the gateway rather than act on JetStream here: the gateway
already carries out every store operation for local code (over HTTP), so
containers get the same checks, limits and errors, and the key-value
buckets and queue streams are reachable by one role only. The agent never
decodes the operation (it is opaque msgpack), so it cannot be made to do
anything but pass it on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats.errors
from thaw_core import contract
from thaw_core.bus import Bus, BusRequestError
from thaw_core.container_protocol import StoreAnswer, StoreRequest
from thaw_core.tasks import Background

log = logging.getLogger("thaw.agent.stores")

# On top of what an operation may wait by itself (a blocking queue get).
REPLY_MARGIN_S = 15.0

Answer = Callable[[StoreAnswer], Awaitable[None]]


class StoreRelay:
    def __init__(self, bus: Bus | None) -> None:
        self._bus = bus
        self._tasks = Background(log)

    def serve(self, request: StoreRequest, answer: Answer) -> None:
        """Relay ``request`` in the background (other frames go on)."""
        self._tasks.spawn(self._relay(request, answer), "store-relay")

    async def _relay(self, request: StoreRequest, answer: Answer) -> None:
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
        await self._tasks.close(1.0)
