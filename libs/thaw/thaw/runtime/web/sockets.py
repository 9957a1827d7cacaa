"""One websocket driven through an ASGI app (an ``asgi_app`` endpoint's
"websocket" scope): ``receive`` pulls the client's next message through the
agent as the app asks for it, ``send`` hands the agent the app's accept,
messages and close, each awaited until the client has it.

The socket always ends with a close from this side: the app's own, 1000
when it returns without one (before it accepted: the gateway refuses the
upgrade with 403), or 1011 with an error id when it raises.
"""

from __future__ import annotations

import asyncio
from typing import Any

from thaw_core.container_protocol import (
    WebPull,
    WebReply,
    WebSent,
    WebSocketReceive,
    WebSocketSend,
)
from thaw_core.schema import (
    WEB_SOCKET_MESSAGE_BYTES,
    WebHead,
    WebSocketAccept,
    WebSocketClose,
    WebSocketData,
)

from thaw.runtime.web.exchange import Asgi, ClientGone, Send, log_failure, scope_of

# The close code of a connection that ended without a close frame (RFC 6455, 7.4.1).
ABNORMAL_CLOSURE = 1006
INTERNAL_ERROR = 1011


class SocketExchange:
    """The runtime's side of one websocket; ``answer`` is fed the agent's replies."""

    def __init__(self, head: WebHead, send_frame: Send) -> None:
        self._head = head
        self._send_frame = send_frame
        self._received: asyncio.Queue[WebReply] = asyncio.Queue()
        self._acks: asyncio.Queue[WebSent] = asyncio.Queue()
        # One part in flight at a time, so that they reach the client in order.
        self._sending = asyncio.Lock()
        self._connected = False
        self._accepted = False
        self._closed = False  # this side sent its close
        self._client_close: int | None = None

    def answer(self, reply: WebReply) -> None:
        if isinstance(reply, WebSent):
            self._acks.put_nowait(reply)
        else:
            self._received.put_nowait(reply)

    async def receive(self) -> dict[str, Any]:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        if self._client_close is None and not self._closed:
            self._send_frame(WebPull(request_id=self._head.request_id))
            match await self._received.get():
                case WebSocketReceive(event=WebSocketData(text=text, data=data)):
                    if text is not None:
                        return {"type": "websocket.receive", "text": text}
                    return {"type": "websocket.receive", "bytes": data or b""}
                case WebSocketReceive(event=WebSocketClose(code=code)):
                    self._client_close = code
                case _:  # the gateway or the client is gone
                    self._client_close = ABNORMAL_CLOSURE
        return {"type": "websocket.disconnect", "code": self._client_close or ABNORMAL_CLOSURE}

    async def send(self, message: dict[str, Any]) -> None:
        if self._closed or self._client_close is not None:
            raise ClientGone(self._head.request_id)
        match message["type"]:
            case "websocket.accept":
                headers = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in message.get("headers") or []
                ]
                await self._ship(
                    WebSocketAccept(subprotocol=message.get("subprotocol"), headers=headers)
                )
                self._accepted = True
            case "websocket.send":
                if not self._accepted:
                    raise RuntimeError("websocket.send before websocket.accept")
                await self._ship(_data(message))
            case "websocket.close":
                self._close(int(message.get("code") or 1000), message.get("reason") or "")
            case other:
                raise RuntimeError(f"unexpected ASGI message {other!r} on a websocket")

    async def _ship(self, event: WebSocketAccept | WebSocketData) -> None:
        async with self._sending:
            self._send_frame(WebSocketSend(request_id=self._head.request_id, event=event))
            if (await self._acks.get()).gone:
                self._client_close = ABNORMAL_CLOSURE
                raise ClientGone(self._head.request_id)

    def _close(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            event = WebSocketClose(code=code, reason=reason)
            self._send_frame(WebSocketSend(request_id=self._head.request_id, event=event))

    async def run(self, app: Asgi) -> BaseException | None:
        """Serve the socket; the app's exception, if it raised (already answered)."""
        try:
            await app(scope_of(self._head), self.receive, self.send)
        except ClientGone:
            pass
        except Exception as e:  # noqa: BLE001 - the user's app failed: closed with an id
            error_id = log_failure(self._head.request_id, e)
            self._close(INTERNAL_ERROR, f"internal server error (error id {error_id})")
            return e
        finally:
            self._close(1000, "")
        return None


def _data(message: dict[str, Any]) -> WebSocketData:
    text: str | None = message.get("text")
    data: bytes | None = message.get("bytes")
    size = len(text.encode()) if text is not None else len(data or b"")
    if size > WEB_SOCKET_MESSAGE_BYTES:
        raise ValueError(
            f"a websocket message of {size} bytes is over thaw's limit of"
            f" {WEB_SOCKET_MESSAGE_BYTES} bytes; split it"
        )
    if text is not None:
        return WebSocketData(text=text)
    return WebSocketData(data=data or b"")
