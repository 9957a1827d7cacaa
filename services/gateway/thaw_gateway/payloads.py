"""Large call arguments and results, kept in the blob store.

Arguments over ``Settings.payload_inline_bytes`` never travel in an
``Invoke``: a client uploads them first (``PUT /v1/payloads/{sha256}``,
streamed to the blob store in 1 MiB pieces, never whole in memory) and names
them by ``PayloadRef``; arguments a JSON body carried inline over the
threshold are kept by the gateway itself. A large result is kept by the agent
that made it, and ``GET /v1/calls/{call_id}/value`` streams its bytes from
the blob store (after the call's verified result says which they are).

Payloads are kept by the hour they were stored in; ``PayloadSweeper`` deletes
each hour's once the results that could name them have aged out of RESULTS.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time

from aiohttp import web
from thaw_core.api import PayloadStored
from thaw_core.blob import BlobStore
from thaw_core.config import ConfigError
from thaw_core.contract import (
    PAYLOAD_HOUR_S,
    PAYLOADS_PREFIX,
    payload_hour_expired,
    payload_key,
)
from thaw_core.schema import Invoke, PayloadRef

from thaw_gateway.deploy import _sha256_param, _store_upload
from thaw_gateway.errors import bad_request, json_response, not_found, too_large
from thaw_gateway.state import Gateway, gateway

log = logging.getLogger("thaw.gateway.payloads")

MAX_NAME = "THAW_PAYLOAD_MAX_BYTES"
SWEEP_EVERY_S = 600.0


# What an Invoke or a Result holds besides its payload, base64 in JSON (4/3).
MESSAGE_FRAMING_BYTES = 64 * 1024


def check_inline_fits(inline_bytes: int, bus_max_payload: int) -> None:
    """The HTTP side and the bus agree: every payload kept inline fits a bus
    message, whatever else the message holds."""
    need = inline_bytes * 4 // 3 + MESSAGE_FRAMING_BYTES
    if bus_max_payload and need > bus_max_payload:
        raise ConfigError(
            f"THAW_PAYLOAD_INLINE_BYTES={inline_bytes} makes messages of up to {need} bytes,"
            f" over the bus's max_payload of {bus_max_payload}: lower it (or raise nats-server's)"
        )


def this_hour() -> int:
    return int(time.time() // PAYLOAD_HOUR_S)


def check_max(gw: Gateway, size: int, what: str) -> None:
    limit = gw.settings.payload_max_bytes
    if size > limit:
        raise too_large(f"{what} is {size} bytes, over the limit of {limit} ({MAX_NAME})")


async def put_payload(request: web.Request) -> web.Response:
    """Keep a call's large arguments; answered with the ref a call names them by."""
    gw = gateway(request)
    sha = _sha256_param(request)
    hour = this_hour()
    stored = await _store_upload(
        request,
        payload_key(hour, sha),
        sha,
        "the payload",
        limit=gw.settings.payload_max_bytes,
        limit_name=MAX_NAME,
    )
    return json_response(
        PayloadStored(ref=PayloadRef(sha256=sha, size=stored.size, hour=hour)), 201
    )


async def uploaded(gw: Gateway, ref: PayloadRef, where: str = "payload_ref") -> PayloadRef:
    """``ref`` when it names a payload that was uploaded as it says."""
    check_max(gw, ref.size, where)
    info = await gw.blob.stat(payload_key(ref.hour, ref.sha256))
    if info is None:
        raise bad_request(
            f"{where}: no payload {ref.sha256} was uploaded in hour {ref.hour}"
            " (or it is older than the results' retention); PUT /v1/payloads/{sha256} first"
        )
    if info.size != ref.size:
        raise bad_request(f"{where}: payload {ref.sha256} is {info.size} bytes, not {ref.size}")
    return ref


async def kept(gw: Gateway, args: bytes) -> tuple[bytes, PayloadRef | None]:
    """Arguments as an ``Invoke`` carries them: inline up to the threshold,
    else stored and named (what a JSON body carried, already in memory)."""
    if len(args) <= gw.settings.payload_inline_bytes:
        return args, None
    check_max(gw, len(args), "the encoded input")
    sha = hashlib.sha256(args).hexdigest()
    hour = this_hour()
    await gw.blob.put(payload_key(hour, sha), args, sha256=sha)
    return b"", PayloadRef(sha256=sha, size=len(args), hour=hour)


async def offloaded(gw: Gateway, args: bytes | PayloadRef, where: str) -> Invoke:
    """A blank input holding ``args`` as they travel: inline when small, else
    by reference to the blob store (checked, or kept there now)."""
    if isinstance(args, PayloadRef):
        return Invoke(call_id="", app="", function="", args_ref=await uploaded(gw, args, where))
    inline, ref = await kept(gw, args)
    return Invoke(call_id="", app="", function="", args=inline, args_ref=ref)


async def stream_value(request: web.Request, ref: PayloadRef) -> web.StreamResponse:
    """Send a large value's bytes as the blob store gives them (1 MiB at a time).
    The blob store checks the sha256 as it reads; a mismatch breaks the
    response before its end, so the client never takes a bad copy as whole."""
    gw = gateway(request)
    key = payload_key(ref.hour, ref.sha256)
    if await gw.blob.stat(key) is None:
        raise not_found(f"the value {ref.sha256} is no longer kept (older than its retention)")
    resp = web.StreamResponse(
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Length": str(ref.size),
            "X-Thaw-Sha256": ref.sha256,
        }
    )
    await resp.prepare(request)
    async for chunk in gw.blob.stream(key):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


class PayloadSweeper:
    """Deletes the payloads of every hour whose results aged out."""

    def __init__(self, blob: BlobStore, every_s: float = SWEEP_EVERY_S) -> None:
        self._blob = blob
        self._every_s = every_s

    async def sweep(self, now_s: float | None = None) -> int:
        now_s = time.time() if now_s is None else now_s
        deleted = 0
        for key in await self._blob.list(PAYLOADS_PREFIX):
            hour = key[len(PAYLOADS_PREFIX) :].split("/", 1)[0]
            if hour.isdigit() and payload_hour_expired(int(hour), now_s):
                with contextlib.suppress(KeyError, FileNotFoundError):
                    await self._blob.delete(key)
                deleted += 1
        return deleted

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                if n := await self.sweep():
                    log.info("deleted %d expired call payloads", n)
            except Exception:
                log.exception("could not sweep expired call payloads")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._every_s)
