"""A websocket to an ``asgi_app`` endpoint, held here and carried to its
container like an HTTP request (``web_exchange``): the upgrade is answered
once the app accepts (403 if it closes first, 500 if it fails), then the
app's messages are written to the client one at a time, each acked once
sent, and the client's are read by one task into a short queue that the
app's pulls take from in order. A pull with nothing to take is answered
``WebSocketIdle`` after ``IDLE_ANSWER_S``, so that the agent notices a
gateway gone."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import WSMsgType, web
from nats.aio.msg import Msg
from thaw_core.schema import (
    HOP_BY_HOP_HEADERS,
    WEB_SOCKET_MESSAGE_BYTES,
    WebPartAck,
    WebSocketAccept,
    WebSocketClose,
    WebSocketData,
    WebSocketEvent,
    WebSocketIdle,
    encode_web,
)

from thaw_gateway.errors import ApiError
from thaw_gateway.web_exchange import Exchange

# How long a pull waits for the client before it is answered idle (well
# under the agent's part timeout).
IDLE_ANSWER_S = 20.0
# The client's messages read ahead of the app; past this the socket's own
# flow control holds the client back.
READ_AHEAD = 16
# The code a client's socket ended with when it sent none (RFC 6455, 7.4.1).
NO_STATUS = 1005
INTERNAL_ERROR = 1011


class SocketExchange(Exchange):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ws: web.WebSocketResponse | None = None
        self._inbox: asyncio.Queue[WebSocketEvent] = asyncio.Queue(READ_AHEAD)
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> web.StreamResponse:
        try:
            return await super().run()
        finally:
            for task in self._tasks:
                task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pulled(self, msg: Msg) -> None:
        # Answered apart, so that the app's messages go out while it waits.
        self._spawn(self._answer_pull(msg))

    async def _answer_pull(self, msg: Msg) -> None:
        answer: WebSocketEvent | WebSocketIdle
        try:
            answer = await asyncio.wait_for(self._inbox.get(), IDLE_ANSWER_S)
        except TimeoutError:
            answer = WebSocketIdle()
        await msg.respond(encode_web(answer))

    async def _read(self, ws: web.WebSocketResponse) -> None:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await self._inbox.put(WebSocketData(text=message.data))
            elif message.type is WSMsgType.BINARY:
                await self._inbox.put(WebSocketData(data=message.data))
        await self._inbox.put(WebSocketClose(code=ws.close_code or NO_STATUS))

    async def _part(self, msg: Msg, part: Any) -> web.StreamResponse | None:
        match part:
            case WebSocketAccept() if self._ws is None:
                await self._accept(part)
                await msg.respond(encode_web(WebPartAck()))
            case WebSocketData() if self._ws is not None:
                gone = False
                try:
                    if part.text is not None:
                        await self._ws.send_str(part.text)
                    else:
                        await self._ws.send_bytes(part.data or b"")
                except (ConnectionResetError, RuntimeError):
                    gone = True
                await msg.respond(encode_web(WebPartAck(gone=gone)))
            case WebSocketClose() if self._ws is None:
                if part.code == INTERNAL_ERROR:
                    raise ApiError(500, "internal", f"the endpoint failed: {part.reason}")
                raise ApiError(403, "forbidden", "the endpoint refused the websocket")
            case WebSocketClose():
                assert self._ws is not None
                await self._ws.close(code=part.code, message=part.reason.encode())
                return self._ws
            case _:
                raise ApiError(502, "bad_gateway", f"a {type(part).__name__} on a websocket")
        return None

    async def _accept(self, part: WebSocketAccept) -> None:
        protocols = (part.subprotocol,) if part.subprotocol else ()
        ws = web.WebSocketResponse(protocols=protocols, max_msg_size=WEB_SOCKET_MESSAGE_BYTES)
        for k, v in part.headers:
            if k.lower() not in HOP_BY_HOP_HEADERS and not k.lower().startswith("sec-websocket"):
                ws.headers.add(k, v)
        await ws.prepare(self._request)
        self._ws = ws
        self._response = ws
        self._spawn(self._read(ws))

    async def _timed_out(self) -> web.StreamResponse:
        if self._ws is not None:
            # The app's container ended it without a close that came through.
            with contextlib.suppress(Exception):
                await self._ws.close()
            return self._ws
        return await super()._timed_out()
