"""Web requests between a container's socket and the gateway that holds the
client (``thaw_core.schema.web``, ``container_protocol``'s web frames).

The bridge keeps no state: each frame names its request, whose subjects say
where it goes. A response part with more to come is a request to the
gateway, answered once the client has it, and only then does the container
hear ``WebSent``: a slow client slows the app, and no part waits in memory
here. A websocket's accept and messages go the same way; its close, like a
response's last part, is published. A gateway that stopped answering (it
went away, the client left) ends the request in the container as a client
gone.

The gateway hears that a container took the request (which stops its start
clock) in the response's first part (``WebResponsePart.accepted_by``), or in
a ``WebAccepted`` just ahead of the request's first other frame, in the same
flush to NATS, so that the gateway wakes once for both; or after
``ACCEPT_AFTER_S`` if the app is slow to start answering. A request run
again (redelivered) or a websocket (whose pulls and sends cross) says so at
once: the gateway must hear it before any of that run's frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from thaw_core.bus import Bus
from thaw_core.container_protocol import (
    WebBody,
    WebFrame,
    WebPull,
    WebReply,
    WebSend,
    WebSent,
    WebSocketReceive,
    WebSocketSend,
)
from thaw_core.contract import web_request_subject, web_response_subject
from thaw_core.schema import (
    WebAccepted,
    WebBodyChunk,
    WebHead,
    WebPartAck,
    WebPulled,
    WebResponsePart,
    WebSocketClose,
    WebSocketIdle,
    encode_web,
    web_decoder,
)

from thaw_agent.container import Container

log = logging.getLogger("thaw.agent.web")

# How long the gateway may take to read a body chunk from its client or to
# write a response part to it (it answers a websocket's pull sooner, idle).
PART_TIMEOUT_S = 60.0
# How long an app may take to start answering before the gateway hears that
# its container took the request: well within any start timeout.
ACCEPT_AFTER_S = 0.25


class WebBridge:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._pulled_decoder = web_decoder(WebPulled)
        self._ack_decoder = web_decoder(WebPartAck)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Requests taken whose gateway has not heard so yet: their timers.
        self._unsaid: dict[str, asyncio.TimerHandle] = {}

    def taken(self, head: WebHead, container: Container, input_id: str, *, again: bool) -> None:
        """A container takes the request (``again``: not its first delivery)."""
        rid = head.request_id
        if again or head.websocket:
            self._spawn(self._accepted(rid, container))
            return
        self._unsaid[rid] = asyncio.get_running_loop().call_later(
            ACCEPT_AFTER_S, self._slow_start, rid, container, input_id
        )

    def _slow_start(self, rid: str, container: Container, input_id: str) -> None:
        del self._unsaid[rid]
        if input_id in container.inflight:  # else it ended (or moved) without a frame
            self._spawn(self._accepted(rid, container))

    async def _accepted(self, rid: str, container: Container) -> None:
        """The gateway stops its start clock."""
        data = encode_web(WebAccepted(container_id=container.id))
        await self._bus.publish_core(web_response_subject(rid), data)

    def on_frame(self, container: Container, frame: WebFrame) -> None:
        """From the container's conversation: relay without holding it up."""
        accepted_by = ""
        timer = self._unsaid.pop(frame.request_id, None)
        if timer is not None:
            timer.cancel()
            if isinstance(frame, WebSend):
                accepted_by = container.id  # said in the part itself
            else:
                # Spawned first, so published first: a publish is queued before it yields.
                self._spawn(self._accepted(frame.request_id, container))
        match frame:
            case WebPull():
                self._spawn(self._pull(container, frame))
            case WebSend():
                part = WebResponsePart(
                    status=frame.status,
                    headers=frame.headers,
                    body=frame.body,
                    more=frame.more,
                    accepted_by=accepted_by,
                )
                self._spawn(self._send(container, frame.request_id, part, acked=frame.more))
            case WebSocketSend(event=event):
                acked = not isinstance(event, WebSocketClose)
                self._spawn(self._send(container, frame.request_id, event, acked=acked))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pull(self, container: Container, frame: WebPull) -> None:
        rid = frame.request_id
        answer: WebReply | None = None
        try:
            while answer is None:
                reply = await self._bus.request(
                    web_request_subject(rid), b"", timeout_s=PART_TIMEOUT_S
                )
                match self._pulled_decoder.decode(reply.data):
                    case WebBodyChunk(body=body, more=more):
                        answer = WebBody(request_id=rid, body=body, more=more)
                    case WebSocketIdle():
                        continue  # the gateway is there; the client has said nothing yet
                    case event:
                        answer = WebSocketReceive(request_id=rid, event=event)
        except Exception as e:  # noqa: BLE001 - no gateway, no client: the request is over
            log.info("web request %s: nothing from the gateway: %r", rid, e)
            answer = WebBody(request_id=rid, gone=True)
        await self._tell(container, answer)

    async def _send(self, container: Container, rid: str, part: Any, *, acked: bool) -> None:
        data = encode_web(part)
        if not acked:
            await self._bus.publish_core(web_response_subject(rid), data)
            return
        try:
            reply = await self._bus.request(
                web_response_subject(rid), data, timeout_s=PART_TIMEOUT_S
            )
            gone = self._ack_decoder.decode(reply.data).gone
        except Exception as e:  # noqa: BLE001 - as in _pull
            log.info("web request %s: the gateway took no part: %r", rid, e)
            gone = True
        await self._tell(container, WebSent(request_id=rid, gone=gone))

    async def _tell(self, container: Container, frame: WebReply) -> None:
        try:
            await container.send(frame)
        except Exception as e:  # noqa: BLE001 - the container is going; its inputs end with it
            log.info("web request %s: container %s gone: %r", frame.request_id, container.id, e)
