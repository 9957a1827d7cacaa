"""One HTTP request driven through an ASGI app: ``receive`` asks the agent
for body chunks as the app reads them, ``send`` hands it response parts.

The last response part is held until the app returns: an app that raises
after its error middleware already answered (Starlette's sends a bare 500
and re-raises) gets the platform's 500 instead, with an id that the
container's log shows with the traceback. It is then ``Exchange.last``, which
goes out in one write with the input's ``Output``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from thaw_core.container_protocol import WebBody, WebPull, WebReply, WebSend
from thaw_core.schema import WEB_CHUNK_BYTES, WebHead

from thaw.runtime.failure import describe
from thaw.runtime.log import log

Send = Callable[[Any], None]
Asgi = Callable[..., Awaitable[None]]


class ClientGone(Exception):
    """The client went away; the request ends here."""


class Refused(Exception):
    """The request cannot be served for a reason the platform names (a
    ``web_server`` that does not listen): answered with ``status`` and this
    message rather than a bare 500, still under an error id in the log."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def scope_of(head: WebHead) -> dict[str, Any]:
    """The ASGI scope of an HTTP request, or of a websocket (``head.websocket``)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": head.method,
        "scheme": head.scheme,
        "path": head.path,
        "raw_path": head.path.encode(),
        "query_string": head.query,
        "root_path": head.root_path,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in head.headers],
        "client": head.client,
        "server": head.server,
        "state": {},
    }
    if head.websocket:
        del scope["method"]
        protocols = ",".join(v for k, v in head.headers if k.lower() == "sec-websocket-protocol")
        scope.update(
            type="websocket",
            scheme="wss" if head.scheme == "https" else "ws",
            subprotocols=[p.strip() for p in protocols.split(",") if p.strip()],
        )
    return scope


def log_failure(request_id: str, e: BaseException) -> str:
    """Log the app's exception with its traceback under a new error id, for
    ``thaw app logs``; the id, for the client."""
    error_id = "err-" + uuid.uuid4().hex[:16]
    log.error(
        "web request %s failed (error id %s):\n%s",
        request_id,
        error_id,
        describe(e).traceback.rstrip(),
    )
    return error_id


def error_response(request_id: str, error_id: str, e: BaseException) -> WebSend:
    refused = isinstance(e, Refused)
    message = e.message if refused else "internal server error"
    body = json.dumps({"error": message, "error_id": error_id}).encode()
    return WebSend(
        request_id=request_id,
        status=e.status if refused else 500,
        headers=[("content-type", "application/json"), ("x-thaw-error-id", error_id)],
        body=body,
    )


class Exchange:
    """The runtime's side of one request; ``answer`` is fed the agent's replies."""

    def __init__(self, head: WebHead, send_frame: Send) -> None:
        self._head = head
        self._send_frame = send_frame
        self._replies: asyncio.Queue[WebReply] = asyncio.Queue()
        self._first_body_taken = False
        self._more_body = head.more_body
        self._start: dict[str, Any] | None = None
        self._shipped = False  # any part went out: the head is the app's
        self._held: WebSend | None = None  # the last part, until the app returns
        # The part that ends the response, once ``run`` returned: the caller sends it.
        self.last: WebSend | None = None
        self._done = asyncio.Event()
        self._gone = False

    def answer(self, reply: WebReply) -> None:
        self._replies.put_nowait(reply)

    async def _reply(self) -> WebReply:
        reply = await self._replies.get()
        if reply.gone:
            self._gone = True
            self._done.set()
            raise ClientGone(self._head.request_id)
        return reply

    async def receive(self) -> dict[str, Any]:
        if not self._first_body_taken:
            self._first_body_taken = True
            return {"type": "http.request", "body": self._head.body, "more_body": self._more_body}
        if self._more_body and not self._done.is_set():
            self._send_frame(WebPull(request_id=self._head.request_id))
            chunk = await self._reply()
            assert isinstance(chunk, WebBody)
            self._more_body = chunk.more
            return {"type": "http.request", "body": chunk.body, "more_body": chunk.more}
        await self._done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self._gone:
            raise ClientGone(self._head.request_id)
        kind = message["type"]
        if kind == "http.response.start":
            self._start = message
            return
        if kind != "http.response.body" or self._start is None:
            return
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        while len(body) > WEB_CHUNK_BYTES:
            await self._ship(body[:WEB_CHUNK_BYTES])
            body = body[WEB_CHUNK_BYTES:]
        if more:
            await self._ship(body)
        else:
            self._held = self._part(body, more=False)
            self._done.set()

    def _part(self, body: bytes, *, more: bool) -> WebSend:
        head: dict[str, Any] = {}
        if not self._shipped and self._start is not None:
            head = {
                "status": int(self._start["status"]),
                "headers": [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in self._start.get("headers", [])
                ],
            }
        return WebSend(request_id=self._head.request_id, body=body, more=more, **head)

    async def _ship(self, body: bytes) -> None:
        self._send_frame(self._part(body, more=True))
        self._shipped = True
        await self._reply()

    async def run(self, app: Asgi) -> BaseException | None:
        """Serve the request; the app's exception, if it raised (already answered)."""
        try:
            await app(scope_of(self._head), self.receive, self.send)
        except ClientGone:
            return None
        except Exception as e:  # noqa: BLE001 - the user's app failed: a 500 with an id
            self._fail(e)
            return e
        finally:
            self._done.set()
        if self._gone:
            return None
        if self._held is not None:
            self.last = self._held
        elif self._shipped:
            self.last = self._part(b"", more=False)
        else:
            self._fail(RuntimeError("the app returned without sending a response"))
        return None

    def _fail(self, e: BaseException) -> None:
        error_id = log_failure(self._head.request_id, e)
        if self._shipped:
            # The head went out already: end the body where it is.
            self.last = self._part(b"", more=False)
        elif not self._gone:
            self.last = error_response(self._head.request_id, error_id, e)
