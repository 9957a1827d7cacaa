"""HTTP errors: whatever goes wrong leaves the gateway as ``api.ErrorBody``
JSON with a stable code from ``api.ERROR_CODES`` and a message that says what
to fix. Handlers raise :class:`ApiError`; :func:`error_middleware` turns it,
aiohttp's own routing errors and unexpected exceptions into responses."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web
from thaw_core.api import ERROR_CODES, MAX_PAYLOAD_BYTES, ErrorBody, ErrorDetail

log = logging.getLogger("thaw.gateway")

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID: web.RequestKey[str] = web.RequestKey("thaw_gateway.request_id", str)
# A client may name its request (to find it in our logs); anything else gets ours.
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_encoder = msgspec.json.Encoder()


class ApiError(Exception):
    """An error the client gets as ``{"error": {"code", "message"}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)


def invalid_state(message: str) -> ApiError:
    """A well-formed request that what it names refuses as it is now (reading
    a directory as a file): 409, not 400, since the same request is valid
    elsewhere; its own code, since nothing exists already (the SDK raises
    InvalidError for it, not AlreadyExistsError)."""
    return ApiError(409, "invalid_state", message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "payload_too_large", message)


def gateway_timeout(message: str) -> ApiError:
    return ApiError(504, "timeout", message)


def unavailable(message: str) -> ApiError:
    """The service cannot take it now (the bus refused it: a full queue)."""
    return ApiError(503, "unavailable", message)


def resource_exhausted(message: str) -> ApiError:
    """No node has room for what was asked, now: asking again later may work."""
    return ApiError(429, "resource_exhausted", message)


def json_response(body: Any, status: int = 200) -> web.Response:
    """``body`` (a Struct, list, dict...) encoded once with msgspec."""
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    resp = json_response(ErrorBody(error=ErrorDetail(code=code, message=message)), status)
    resp.headers.update(headers or {})
    return resp


def error_line(code: str, message: str) -> bytes:
    """The last line of an NDJSON stream that failed after it started."""
    return _encoder.encode(ErrorBody(error=ErrorDetail(code=code, message=message))) + b"\n"


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp raises these itself (no route, wrong method, body too large)."""
    match exc.status:
        case 404:
            return error_response(
                404, "not_found", f"no such endpoint: {request.method} {request.path}"
            )
        case 405:
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
            return error_response(
                405,
                "bad_request",
                f"method {request.method} is not allowed on {request.path}"
                + (f"; use {allowed}" if allowed else ""),
                {"Allow": exc.headers.get("Allow", allowed)},
            )
        case 413:
            return error_response(
                413, "payload_too_large", f"request body is over {MAX_PAYLOAD_BYTES} bytes"
            )
    code = {401: "unauthorized", 403: "forbidden", 408: "timeout", 409: "conflict"}.get(
        exc.status, "bad_request" if exc.status < 500 else "internal"
    )
    return error_response(exc.status, code, exc.text or exc.reason)


# nginx's "client closed request", for the access log: no client reads it.
CLIENT_GONE_STATUS = 499


def client_gone(request: web.Request) -> web.Response:
    """The client left mid-request: nobody to answer, and nothing went wrong
    here. Re-raised, aiohttp would log it as an error with its traceback and
    try a 500 on the half-written response; closed, what aiohttp writes of
    this answer meets a closed transport, which it takes quietly."""
    log.debug("%s %s: the client went away", request.method, request.path)
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=CLIENT_GONE_STATUS)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    rid = request.headers.get(REQUEST_ID_HEADER, "")
    if not _CLIENT_REQUEST_ID.match(rid):
        rid = secrets.token_hex(8)
    request[REQUEST_ID] = rid
    try:
        resp = await handler(request)
    except ApiError as e:
        resp = error_response(e.status, e.code, e.message, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        resp = _from_http_exception(request, e)
    except ConnectionResetError:
        return client_gone(request)
    except Exception:
        log.exception(
            "unhandled error in %s %s",
            request.method,
            request.path,
            extra={"request_id": rid, "method": request.method, "path": request.path},
        )
        resp = error_response(
            500, "internal", f"internal error; quote request id {rid} when reporting it"
        )
    if not resp.prepared:  # a stream that started has sent its headers already
        resp.headers[REQUEST_ID_HEADER] = rid
    return resp
