"""``/v1/openapi.json``: OpenAPI 3.1 made from the route table and the
``thaw_core.api`` Structs (``msgspec.json.schema_components``), so the
document cannot drift from what the server does."""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from thaw_core.api import ErrorBody

from thaw_gateway.openapi_limits import constrain, param_schema
from thaw_gateway.routes import ROUTES, Route, body_types

_REF = "#/components/schemas/{name}"
_ERRORS = {
    400: "bad request: malformed JSON, an unknown or mistyped field (named in the message)",
    401: "missing, malformed, unknown, revoked or expired token",
    403: "the token's scope does not hold the one this route needs (x-thaw-scopes),"
    " or it is an invoke token of other apps",
    404: "unknown app, function, call, container or bundle",
    409: "conflict: the app is stopped, the call already finished, a volume path is a"
    " directory, ... (code invalid_state: what the request names refuses it as it is)",
    413: "body or input over the size limit",
    429: "resource_exhausted: no node has room for the sandbox now; try again later",
    500: "internal error (the message carries a request id)",
    503: "unavailable: a service the request needs (the scheduler) is not running, or the"
    " bus refused the input (its queue is at its limits; the message names the bus's reason):"
    " nothing was taken, try again",
    504: "the bus or an agent did not answer in time",
}


def _content(media: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {media: {"schema": schema}}


def _operation(route: Route, schema_of: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {
            "name": p,
            "in": "path",
            "required": True,
            "schema": param_schema("path", p, {"type": "string"}),
        }
        for p in route.path_params
    ]
    params += [
        {"name": name, "in": "query", "required": False,
         "schema": param_schema("query", name, {"type": typ}), "description": text}
        for name, typ, text in route.query
    ]  # fmt: skip
    op: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "parameters": params,
        "responses": {},
    }
    if route.body is not None:
        op["requestBody"] = {
            "required": not route.body_optional,
            "content": _content("application/json", schema_of[route.body]),
        }
    elif route.raw_body:
        op["requestBody"] = {
            "required": True,
            "content": _content(route.raw_body, {"type": "string", "format": "binary"}),
        }
    for answer in route.answers:
        resp: dict[str, Any] = {"description": answer.description}
        if answer.body is not None:
            resp["content"] = _content(answer.media, schema_of[answer.body])
        op["responses"][str(answer.status)] = resp
    errors = {400, 500, *route.errors} | (set() if route.public else {401, 403})
    for status in sorted(errors):
        op["responses"][str(status)] = {
            "description": _ERRORS[status],
            "content": _content("application/json", schema_of[ErrorBody]),
        }
    op["security"] = [] if route.public else [{"bearer": []}]
    if not route.public:
        # Any one of these will do (api.GRANTS: which tokens hold each).
        op["x-thaw-scopes"] = sorted(route.scopes)
    return op


@functools.cache
def document() -> dict[str, Any]:
    types = [*body_types(), ErrorBody]
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(types, schemas, strict=True))
    constrain(components)
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schema_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "thaw gateway",
            "version": "1",
            "description": "Deploy apps, call functions, follow their results and logs."
            ' Every error is {"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
