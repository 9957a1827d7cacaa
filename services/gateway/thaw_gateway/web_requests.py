"""HTTP requests to web endpoints: found by Host header or ``/web/`` path
(``web_endpoints``), turned into one input on the function's INVOKE subject
(so placement, scale-from-zero and redelivery are a call's), and answered
with the parts the agent relays back (``thaw_core.schema.web``).

The client's connection stays here; ``web_exchange`` (``web_sockets`` for a
websocket) carries it to the container and back, never holding a body whole.

Answers of the platform's own: 404 for an unknown endpoint, 401 for a
missing or unknown token where the endpoint has ``requires_proxy_auth``, 413
past ``web_max_body_bytes``, 501 for a websocket to an endpoint other than
an ``asgi_app``, 503 when no container takes the request
within ``web_start_timeout_s``, 500 (with the error) when its container
failed to start.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from thaw_core.result_proof import new_key
from thaw_core.schema import HOP_BY_HOP_HEADERS, Invoke, WebHead, encode

from thaw_gateway import auth, web_endpoints, web_route
from thaw_gateway.call_ids import new_call_id
from thaw_gateway.calls import check_size, issued, publish_input
from thaw_gateway.errors import ApiError, not_found, too_large
from thaw_gateway.state import Gateway, gateway
from thaw_gateway.web_exchange import Exchange, RequestBody
from thaw_gateway.web_sockets import SocketExchange

# The header a ``requires_proxy_auth`` endpoint takes a thaw token in; never passed on.
PROXY_TOKEN_HEADER = "x-thaw-token"
# The endpoint kinds whose apps take websockets: the user's own ASGI app.
WEBSOCKET_KINDS = ("asgi",)
# Headers the app never sees: one set, one lookup per header.
_NOT_PASSED = HOP_BY_HOP_HEADERS | {PROXY_TOKEN_HEADER}
_DECORATORS = {"endpoint": "fastapi_endpoint", "wsgi": "wsgi_app", "server": "web_server"}


@web.middleware
async def web_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    gw = gateway(request)
    # Matched by the router (web_route), or by its Host on a path of the API's.
    target = web_route.matched(request) or web_route.target(request, gw.settings.web_domain)
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
        if not token:
            raise ApiError(
                401, "unauthorized", f"this endpoint needs a thaw token in {PROXY_TOKEN_HEADER}"
            )
        # Any valid token that may invoke this app's functions.
        try:
            principal = await auth.principal_of(gw.tokens, token)
        except ApiError as e:
            raise ApiError(e.status, e.code, f"{e.message} (in {PROXY_TOKEN_HEADER})") from None
        auth.check_scope(principal, "invoke", f"web endpoint {label!r} of app {app.name!r}")
        auth.check_app(principal, app.name)
    return app.name, endpoint


def _head(
    request: web.Request,
    request_id: str,
    root: str,
    path: str,
    first: tuple[bytes, bool],
    *,
    websocket: bool,
) -> WebHead:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    headers = [(str(k), v) for k, v in request.headers.items() if k.lower() not in _NOT_PASSED]
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
        websocket=websocket,
    )


async def serve(
    request: web.Request, gw: Gateway, app_name: str, label: str, root: str, path: str
) -> web.StreamResponse:
    app, endpoint = await _endpoint(request, gw, app_name, label)
    websocket = request.headers.get("upgrade", "").lower() == "websocket"
    kind = endpoint.option.get("kind")
    if websocket and kind not in WEBSOCKET_KINDS:
        raise ApiError(
            501,
            "not_implemented",
            f"websockets are served by @thaw.asgi_app endpoints; {endpoint.name} is a"
            f" @thaw.{_DECORATORS.get(str(kind), kind)} endpoint",
        )
    limit = gw.settings.web_max_body_bytes
    if (request.content_length or 0) > limit:
        raise too_large(f"the request body is over {limit} bytes")
    body = RequestBody(request, limit)
    with gw.web.hold() as (request_id, parts):
        first = (b"", False) if websocket else await body.chunk()
        head = _head(request, request_id, root, path, first, websocket=websocket)
        invoke = Invoke(
            call_id=new_call_id(),
            app=app,
            function=endpoint.function,
            method=endpoint.method,
            codec="json",
            web=head,
            key=new_key(),
        )
        data = encode(invoke)
        check_size(gw.bus, data)
        # Not ``results.issued``: a web call's result, arriving once the
        # response is out, is dropped unread rather than verified and kept;
        # the rare look-up of it by call id reads RESULTS instead.
        with gw.results.expect(invoke.call_id, invoke.key) as result:
            await publish_input(gw.bus, invoke, data)
            gw.calls.record([issued(invoke)])
            exchange = SocketExchange if websocket else Exchange
            return await exchange(request, gw, invoke, body, parts, result).run()
