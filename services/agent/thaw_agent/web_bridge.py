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


class WebBridge:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._pulled_decoder = web_decoder(WebPulled)
        self._ack_decoder = web_decoder(WebPartAck)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def accepted(self, head: WebHead, container: Container) -> None:
        """A container takes the request: the gateway stops its start clock."""
        await self._bus.publish_core(
            web_response_subject(head.request_id),
            encode_web(WebAccepted(container_id=container.id)),
        )

    def on_frame(self, container: Container, frame: WebFrame) -> None:
        """From the container's conversation: relay without holding it up."""
        match frame:
            case WebPull():
                self._spawn(self._pull(container, frame))
            case WebSend():
                part = WebResponsePart(
                    status=frame.status, headers=frame.headers, body=frame.body, more=frame.more
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
