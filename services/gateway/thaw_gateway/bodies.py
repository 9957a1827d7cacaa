"""Reading what a request carries: JSON bodies (msgspec, one decoder per
type, unknown fields refused), path names and query parameters, each refused
with a 4xx that names the offending field."""

from __future__ import annotations

import functools
import math
import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from thaw_core.api import MAX_PAYLOAD_BYTES
from thaw_core.schema import CALL_ID_RE, check_name

from thaw_gateway.body_budget import BUDGET
from thaw_gateway.errors import bad_request, too_large

T = TypeVar("T")
_READ_CHUNK = 1 << 20

# Container ids follow the call-id rule: a subject token and a path segment.
CONTAINER_ID_RE = CALL_ID_RE


@functools.cache
def decoder_for(kind: type[T]) -> msgspec.json.Decoder[T]:
    return msgspec.json.Decoder(kind)


async def read_whole(request: web.Request) -> bytes | bytearray:
    """The body, read into memory within the gateway's budget for bodies
    (``body_budget``): into one buffer of its announced length, so that it
    is never held twice."""
    size = request.content_length
    if size is not None and size > MAX_PAYLOAD_BYTES:
        raise too_large(f"request body of {size} bytes is over {MAX_PAYLOAD_BYTES}")
    if size == 0 or not request.body_exists:
        return b""
    budget = request.app[BUDGET]
    await budget.reserve(request, MAX_PAYLOAD_BYTES if size is None else size, "a request body")
    if size is None:
        return await request.read()  # chunked: aiohttp refuses it past client_max_size
    buf = bytearray(size)
    view = memoryview(buf)
    at = 0
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        if at + len(chunk) > size:
            raise bad_request(f"request body is longer than its Content-Length of {size}")
        view[at : at + len(chunk)] = chunk
        at += len(chunk)
    if at != size:
        raise bad_request(f"request body ended after {at} of its {size} bytes")
    return buf


async def read_body(request: web.Request, kind: type[T], *, empty_ok: bool = False) -> T:
    """The body decoded as ``kind``. ``empty_ok``: an empty body means ``{}``
    (every field at its default), so ``curl -X POST`` works without ``-d``."""
    data = await read_whole(request)
    # A union of tagged operations has no name of its own.
    name = getattr(kind, "__name__", "operation")
    if not data or data.isspace():  # not strip(): a copy of a large body
        if not empty_ok:
            raise bad_request(f"request body is empty; expected a JSON {name} object")
        data = b"{}"
    try:
        return decoder_for(kind).decode(data)
    except msgspec.ValidationError as e:
        whole = _with_whole_numbers(data, kind)
        if whole is None:
            raise bad_request(f"invalid {name}: {e}") from None
        return whole
    except msgspec.DecodeError as e:
        raise bad_request(f"request body is not valid JSON: {e}") from None


def _whole(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


_WHOLE_NUMBERS = msgspec.json.Decoder(float_hook=_whole)


def _with_whole_numbers(data: bytes, kind: type[T]) -> T | None:
    """``data`` as ``kind`` with whole numbers written as floats (``3.0``)
    taken as integers, as JSON and JSON Schema take them (one number type);
    None when it is not valid that way either. Only bodies refused as
    written come here, so a valid one's floats stay floats."""
    try:
        return msgspec.convert(_WHOLE_NUMBERS.decode(data), kind)
    except (msgspec.ValidationError, msgspec.DecodeError, OverflowError, ValueError):
        return None


def checked_name(kind: str, value: str) -> str:
    try:
        return check_name(kind, value)
    except ValueError as e:
        raise bad_request(str(e)) from None


def path_name(request: web.Request, kind: str) -> str:
    """A name (app, function) from the path, checked like every name."""
    return checked_name(kind, request.match_info[kind])


def query_name(request: web.Request, kind: str) -> str | None:
    """An optional name filter from the query string (``?app=``, ``?function=``)."""
    value = request.query.get(kind)
    return None if value is None else checked_name(kind, value)


def path_id(request: web.Request, key: str, pattern: re.Pattern[str] = CALL_ID_RE) -> str:
    value = request.match_info[key]
    if not pattern.fullmatch(value):
        raise bad_request(
            f"invalid {key} {value!r}: use letters, digits, '_' and '-' (at most 128)"
        )
    return value


def query_seconds(request: web.Request, key: str, *, default: float, cap: float) -> float:
    """A duration in seconds from the query string; values above ``cap`` are
    lowered to it (a long poll that ends early is answered 202, and polled again)."""
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise bad_request(f"query parameter {key}={raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise bad_request(f"query parameter {key}={raw!r} must be a number of seconds >= 0")
    return min(value, cap)


def query_count(request: web.Request, key: str, *, default: int, cap: int) -> int:
    """A positive count from the query string (``?limit=``), lowered to ``cap``."""
    raw = request.query.get(key)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise bad_request(f"query parameter {key}={raw!r} must be a whole number >= 1")
    return min(int(raw), cap)


def query_flag(request: web.Request, key: str) -> bool:
    raw = request.query.get(key)
    if raw is None:
        return False
    match raw.lower():
        case "" | "1" | "true" | "yes":
            return True
        case "0" | "false" | "no":
            return False
    raise bad_request(f"query parameter {key}={raw!r} must be 1/true or 0/false")


def convert(value: Any, kind: type[T], where: str) -> T:
    """``value`` (already parsed JSON) as ``kind``, errors prefixed with ``where``."""
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as e:
        raise bad_request(f"{where}: {e}") from None
