"""One trace span per HTTP request (OpenTelemetry, kind SERVER).

A caller's W3C ``traceparent`` header, when it sends one, makes the span its
child, so a client's trace goes on through the gateway; everything the
handler publishes on the bus carries the span's context on to the agents.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from thaw_core.telemetry import recording

_tracer = trace.get_tracer("thaw.gateway")


def _route(request: web.Request) -> str:
    # The route's template (/v1/calls/{call_id}), not the path: span names stay few.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def trace_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if not recording():
        # No span (it would go nowhere), but a caller's traceparent still
        # rides on to the bus messages the handler publishes.
        if "traceparent" not in request.headers:
            return await handler(request)
        token = otel_context.attach(propagate.extract(request.headers))
        try:
            return await handler(request)
        finally:
            otel_context.detach(token)
    route = _route(request)
    with _tracer.start_as_current_span(
        f"{request.method} {route}",
        context=propagate.extract(request.headers),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": request.method,
            "http.route": route,
            "url.path": request.path,
        },
    ) as span:
        resp = await handler(request)
        span.set_attribute("http.response.status_code", resp.status)
        if resp.status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        return resp
