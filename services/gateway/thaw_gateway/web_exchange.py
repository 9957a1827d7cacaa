"""One web request's exchange with the container that serves it, once its
input is published: the parts the agent relays (``thaw_core.schema.web``)
arrive on the request's queue (``web_hub``) and are answered here.

The request body is read from the client only when the app asks for the
next chunk; each response part is written to the client before the agent is
told to send the next. Neither is ever held whole. ``web_sockets`` serves a
websocket the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from multidict import CIMultiDict
from nats.aio.msg import Msg
from thaw_core.contract import cancel_subject
from thaw_core.schema import (
    HOP_BY_HOP_HEADERS,
    WEB_CHUNK_BYTES,
    CancelCall,
    Invoke,
    Result,
    WebAccepted,
    WebBodyChunk,
    WebPartAck,
    WebResponsePart,
    WebToGateway,
    encode_web,
    web_decoder,
)

from thaw_gateway.errors import ApiError, too_large
from thaw_gateway.state import Gateway

# After its container reported the input done, how long its last part may lag.
LAST_PART_GRACE_S = 10.0
# After it reported the input failed: the container answers a failing app with
# a part of its own (an error id; a web_server's 503 naming its port), which
# the result, on another path, may overtake; an input that failed before its
# app ran (a container that did not start, an enter hook) has none, and its
# client should not wait long for it.
FAILED_PART_GRACE_S = 2.0

_part_decoder = web_decoder(WebToGateway)


class RequestBody:
    """The client's request body, read a chunk at a time, within the limit."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self._content = request.content
        self._limit = limit
        self.read_bytes = 0
        self.pulls = 0

    async def chunk(self) -> tuple[bytes, bool]:
        parts: list[bytes] = []
        size = 0
        while size < WEB_CHUNK_BYTES:
            data = await self._content.read(WEB_CHUNK_BYTES - size)
            if not data:
                break
            parts.append(data)
            size += len(data)
        self.read_bytes += size
        if self.read_bytes > self._limit:
            raise too_large(f"the request body is over {self._limit} bytes")
        return b"".join(parts), not self._content.at_eof()


class Exchange:
    def __init__(
        self,
        request: web.Request,
        gw: Gateway,
        invoke: Invoke,
        body: RequestBody,
        parts: asyncio.Queue[Msg],
        result: asyncio.Future[Result],
    ) -> None:
        self._request = request
        self._gw = gw
        self._invoke = invoke
        self._body = body
        self._parts = parts
        self._result: asyncio.Future[Result] | None = result
        self._accepted = 0
        self._response: web.StreamResponse | None = None
        self._failure: Result | None = None

    async def run(self) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        start_by = loop.time() + self._gw.settings.web_start_timeout_s
        last_by: float | None = None
        while True:
            if last_by is not None:
                timeout: float | None = last_by - loop.time()
            elif not self._accepted:
                timeout = start_by - loop.time()
            else:
                timeout = None
            msg = await self._next(timeout)
            if isinstance(msg, Result):
                grace = LAST_PART_GRACE_S
                if msg.status != "success" and self._response is None:
                    self._failure, grace = msg, FAILED_PART_GRACE_S
                last_by = loop.time() + grace
                continue
            if msg is None:
                return await self._timed_out()
            done = await self._handle(msg)
            if done is not None:
                return done

    async def _next(self, timeout: float | None) -> Msg | Result | None:
        if not self._parts.empty():
            # A part waiting already (the common case once the container
            # answers): no task, no wait set, no timer per message.
            return self._parts.get_nowait()
        if timeout is not None and timeout <= 0:
            return None
        get = asyncio.ensure_future(self._parts.get())
        waiting: set[asyncio.Future[Any]] = {get}
        if self._result is not None:
            waiting.add(self._result)
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            return get.result()
        get.cancel()
        if self._result is not None and self._result in done:
            result, self._result = self._result.result(), None
            return result
        return None

    async def _handle(self, msg: Msg) -> web.StreamResponse | None:
        if msg.subject.endswith(".req"):
            await self._pulled(msg)
            return None
        part = _part_decoder.decode(msg.data)
        if isinstance(part, WebAccepted):
            return await self._cut_short() if self._taken_again() else None
        if isinstance(part, WebResponsePart) and part.accepted_by and self._taken_again():
            return await self._cut_short()
        return await self._part(msg, part)

    def _taken_again(self) -> bool:
        """Count that a container took the request; True when this is a
        second run, after its first container died, of one whose body was
        read or answer begun: what the first run consumed or sent cannot be
        had again."""
        self._accepted += 1
        return self._accepted > 1 and (self._response is not None or self._body.pulls > 0)

    async def _pulled(self, msg: Msg) -> None:
        """The app wants the next chunk of the request body."""
        self._body.pulls += 1
        data, more = await self._body.chunk()
        await msg.respond(encode_web(WebBodyChunk(body=data, more=more)))

    async def _part(self, msg: Msg, part: Any) -> web.StreamResponse | None:
        """One part of the app's answer; the response once it is complete."""
        if not isinstance(part, WebResponsePart):
            raise ApiError(502, "bad_gateway", f"a {type(part).__name__} in an HTTP response")
        return await self._write(msg, part)

    async def _write(self, msg: Msg, part: WebResponsePart) -> web.StreamResponse | None:
        if self._response is None:
            headers: CIMultiDict[str] = CIMultiDict()
            for k, v in part.headers:
                if k.lower() not in HOP_BY_HOP_HEADERS:
                    headers.add(k, v)
            if not part.more:
                # The whole response in one part: one write, head and body.
                self._response = web.Response(
                    status=part.status or 200, headers=headers, body=part.body
                )
                return self._response
            self._response = web.StreamResponse(status=part.status or 200, headers=headers)
            await self._response.prepare(self._request)
        try:
            if part.body:
                await self._response.write(part.body)
            if not part.more:
                await self._response.write_eof()
        except (ConnectionResetError, RuntimeError):
            if part.more:
                await msg.respond(encode_web(WebPartAck(gone=True)))
            raise ConnectionResetError("the client went away") from None
        if not part.more:
            return self._response
        await msg.respond(encode_web(WebPartAck()))
        return None

    async def _timed_out(self) -> web.StreamResponse:
        if self._response is not None:
            return await self._cut_short()
        if self._failure is not None:
            raise _failed(self._failure)
        if self._accepted:
            raise ApiError(502, "bad_gateway", "the endpoint ended without a complete response")
        call_id = self._invoke.call_id
        await self._gw.bus.publish_core(cancel_subject(call_id), CancelCall(call_id=call_id))
        raise ApiError(
            503,
            "unavailable",
            f"no container of {self._invoke.app}.{self._invoke.function} started within"
            f" {self._gw.settings.web_start_timeout_s:g} s to take this request;"
            " try again, or see `thaw app logs`",
        )

    async def _cut_short(self) -> web.StreamResponse:
        if self._response is None:
            raise ApiError(502, "bad_gateway", "the endpoint's container died mid-request")
        if self._request.transport is not None:
            self._request.transport.close()
        return self._response


def _failed(result: Result) -> ApiError:
    return ApiError(500, "internal", f"the endpoint failed: {result.error}")
