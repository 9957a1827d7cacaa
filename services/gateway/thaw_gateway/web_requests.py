"""HTTP requests to web endpoints: found by Host header or ``/web/`` path
(``web_endpoints``), turned into one input on the function's INVOKE subject
(so placement, scale-from-zero and redelivery are a call's), and answered
with the parts the agent relays back (``thaw_core.schema.web``).

The client's connection stays here. The request body is read from it only
when the app asks for the next chunk; each response part is written to it
before the agent is told to send the next. Neither is ever held whole.

Answers of the platform's own: 404 for an unknown endpoint, 401 for a
missing or unknown token where the endpoint has ``requires_proxy_auth``, 413
past ``web_max_body_bytes``, 501 for a websocket upgrade, 503 when no
container takes the request within ``web_start_timeout_s``, 500 (with the
error) when its container failed to start.
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
    WebHead,
    WebPartAck,
    WebResponsePart,
    WebToGateway,
    encode,
    encode_web,
    web_decoder,
)

from thaw_gateway import web_endpoints
from thaw_gateway.calls import check_size, issued, new_call_id, publish_input
from thaw_gateway.errors import ApiError, not_found, too_large
from thaw_gateway.state import Gateway, gateway

# The header a ``requires_proxy_auth`` endpoint takes a thaw token in; never passed on.
PROXY_TOKEN_HEADER = "x-thaw-token"
# After its container reported the input done, how long its last part may lag.
LAST_PART_GRACE_S = 10.0

_part_decoder = web_decoder(WebToGateway)


def _target(request: web.Request, domain: str) -> tuple[str, str, str, str] | None:
    """(app, label, root_path, path) of a web request; None for the API."""
    by_host = web_endpoints.split_host(request.host, domain)
    if by_host is not None:
        return *by_host, "", request.raw_path.split("?", 1)[0]
    by_path = web_endpoints.split_path(request.raw_path.split("?", 1)[0])
    if by_path is None:
        return None
    app, label, rest = by_path
    root = f"{web_endpoints.PATH_PREFIX}{app}/{label}"
    return app, label, root, root + (rest or "/")


@web.middleware
async def web_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    gw = gateway(request)
    target = _target(request, gw.settings.web_domain)
    if target is None:
        return await handler(request)
    return await serve(request, gw, *target)


async def _app(gw: Gateway, name: str) -> Any:
    try:
        return await gw.catalog.get_app(name)
    except ApiError:
        # Host names are lower-case: match an app whose name is not.
        for app in gw.catalog.apps():
            if web_endpoints.host_label(app.name) == name:
                return app
        raise


async def _endpoint(
    request: web.Request, gw: Gateway, app_name: str, label: str
) -> tuple[str, web_endpoints.Endpoint]:
    app = await _app(gw, app_name)
    endpoint = web_endpoints.find(app.functions.values(), label) if app.live else None
    if endpoint is None:
        raise not_found(f"no web endpoint {label!r} in app {app_name!r}")
    if endpoint.requires_proxy_auth:
        token = request.headers.get(PROXY_TOKEN_HEADER, "")
        if not token or await gw.tokens.authenticate(token) is None:
            raise ApiError(
                401, "unauthorized", f"this endpoint needs a thaw token in {PROXY_TOKEN_HEADER}"
            )
    return app.name, endpoint


class _Body:
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


def _head(
    request: web.Request, request_id: str, root: str, path: str, first: tuple[bytes, bool]
) -> WebHead:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    headers = [
        (str(k), v)
        for k, v in request.headers.items()
        if k.lower() not in HOP_BY_HOP_HEADERS and k.lower() != PROXY_TOKEN_HEADER
    ]
    host, _, port = request.host.rpartition(":")
    return WebHead(
        request_id=request_id,
        method=request.method,
        path=path,
        query=request.query_string.encode(),
        headers=headers,
        root_path=root,
        scheme=request.scheme,
        client=(str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None,
        server=(host, int(port)) if port.isdigit() else None,
        body=first[0],
        more_body=first[1],
    )


async def serve(
    request: web.Request, gw: Gateway, app_name: str, label: str, root: str, path: str
) -> web.StreamResponse:
    app, endpoint = await _endpoint(request, gw, app_name, label)
    if request.headers.get("upgrade", "").lower() == "websocket":
        raise ApiError(501, "not_implemented", "websockets are not served by thaw's web endpoints")
    limit = gw.settings.web_max_body_bytes
    if (request.content_length or 0) > limit:
        raise too_large(f"the request body is over {limit} bytes")
    body = _Body(request, limit)
    with gw.web.hold() as (request_id, parts):
        head = _head(request, request_id, root, path, await body.chunk())
        invoke = Invoke(
            call_id=new_call_id(),
            app=app,
            function=endpoint.function,
            method=endpoint.method,
            codec="json",
            web=head,
        )
        data = encode(invoke)
        check_size(gw.bus, data)
        gw.results.issued([invoke.call_id])
        with gw.results.expect(invoke.call_id) as result:
            await publish_input(gw.bus, invoke, data)
            gw.calls.record([issued(invoke)])
            return await _Exchange(request, gw, invoke, body, parts, result).run()


class _Exchange:
    def __init__(
        self,
        request: web.Request,
        gw: Gateway,
        invoke: Invoke,
        body: _Body,
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

    async def run(self) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        start_by = loop.time() + self._gw.settings.web_start_timeout_s
        last_by: float | None = None
        while True:
            if not self._accepted:
                timeout: float | None = start_by - loop.time()
            elif last_by is not None:
                timeout = last_by - loop.time()
            else:
                timeout = None
            msg = await self._next(timeout)
            if isinstance(msg, Result):
                if msg.status != "success" and self._response is None:
                    raise _failed(msg)
                last_by = loop.time() + LAST_PART_GRACE_S
                continue
            if msg is None:
                return await self._timed_out()
            done = await self._handle(msg)
            if done is not None:
                return done

    async def _next(self, timeout: float | None) -> Msg | Result | None:
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
            self._body.pulls += 1
            data, more = await self._body.chunk()
            await msg.respond(encode_web(WebBodyChunk(body=data, more=more)))
            return None
        part = _part_decoder.decode(msg.data)
        if isinstance(part, WebAccepted):
            self._accepted += 1
            if self._accepted > 1 and (self._response is not None or self._body.pulls):
                # Run again after its container died: what the first run
                # consumed or sent cannot be had again.
                return await self._cut_short()
            return None
        return await self._write(msg, part)

    async def _write(self, msg: Msg, part: WebResponsePart) -> web.StreamResponse | None:
        if self._response is None:
            headers: CIMultiDict[str] = CIMultiDict()
            for k, v in part.headers:
                if k.lower() not in HOP_BY_HOP_HEADERS:
                    headers.add(k, v)
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
