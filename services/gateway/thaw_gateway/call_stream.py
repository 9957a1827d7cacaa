"""``POST /v1/calls:stream``: many calls' results as NDJSON, each line as its
call finishes. The results already stored go first, then the rest as the
one result subscription delivers them; a stream that hears nothing for a
while looks its missing results up in RESULTS, in case the subscription
missed them (a NATS reconnect), backing off up to once a minute. Calls issued
here since the last reconnect are not looked up (``ResultHub.known``): the
subscription missed none of theirs, and a map's later batches, waiting their
turn behind the earlier ones, would otherwise cost a JetStream request per
input every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import msgspec
from aiohttp import web
from thaw_core.api import StreamRequest
from thaw_core.schema import Result, is_call_id

from thaw_gateway.bodies import read_body
from thaw_gateway.calls import NDJSON, check_call_apps, client_gone
from thaw_gateway.errors import bad_request, error_line, not_found, too_large
from thaw_gateway.results import GatewayStopping, to_call_result
from thaw_gateway.state import Gateway, gateway

log = logging.getLogger("thaw.gateway")

MAX_STREAM_CALLS = 100_000
MAX_STREAM_TIMEOUT_S = 24 * 3600.0

_line_encoder = msgspec.json.Encoder()


async def stream_calls(request: web.Request) -> web.StreamResponse:
    """NDJSON, one ``CallResult`` per line as each call finishes: the stored
    ones first, then the rest as they arrive, until all are in or the timeout."""
    gw = gateway(request)
    body = await read_body(request, StreamRequest)
    call_ids = list(dict.fromkeys(body.call_ids))
    if len(call_ids) > MAX_STREAM_CALLS:
        raise too_large(f"{len(call_ids)} call ids; a stream takes at most {MAX_STREAM_CALLS}")
    for i, cid in enumerate(call_ids):
        if not is_call_id(cid):
            raise bad_request(f"call_ids[{i}]: {cid!r} is not a call id")
    await check_call_apps(request, gw, call_ids)
    if not 0 < body.timeout_s <= MAX_STREAM_TIMEOUT_S:
        raise bad_request(f"timeout_s must be > 0 and <= {MAX_STREAM_TIMEOUT_S:g}")
    deadline = asyncio.get_running_loop().time() + body.timeout_s

    # Each call's record holds its result key, without which no result of
    # it could be told from a forgery.
    known = await gw.calls.lookup(call_ids)
    unknown = [cid for cid in call_ids if cid not in known]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise not_found(f"{len(unknown)} of the call ids were never made: {shown}")
    keys = {cid: known[cid].key for cid in call_ids}
    with gw.results.expect_many(keys) as arrivals:
        stored = await gw.results.stored_many(keys)
        resp = web.StreamResponse(headers={"Content-Type": NDJSON})
        await resp.prepare(request)
        try:
            await _stream_results(gw, request, resp, keys, stored, arrivals, deadline)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # headers are sent: report in-band
            log.exception("calls:stream failed")
            await resp.write(error_line("internal", f"stream failed: {e!r}"))
        if not client_gone(request):
            await resp.write_eof()
        return resp


# A stream that got nothing for this long looks its missing results up in
# RESULTS (those the subscription may have missed), then twice as long, ...
_RECHECK_FIRST_S = 5.0
_RECHECK_MAX_S = 60.0


async def _stream_results(
    gw: Gateway,
    request: web.Request,
    resp: web.StreamResponse,
    wanted: dict[str, bytes],
    stored: dict[str, Result],
    arrivals: asyncio.Queue[Result | GatewayStopping],
    deadline: float,
) -> None:
    done: set[str] = set()
    loop = asyncio.get_running_loop()

    def lines(outcomes: Iterable[Result | GatewayStopping]) -> bytes:
        out = bytearray()
        for outcome in outcomes:
            if isinstance(outcome, GatewayStopping) or outcome.call_id in done:
                continue  # stored and also delivered live
            done.add(outcome.call_id)
            out += _line_encoder.encode(to_call_result(outcome)) + b"\n"
        return bytes(out)

    first = lines(stored.values())
    if first:
        await resp.write(first)
    recheck_every = _RECHECK_FIRST_S
    recheck_at = loop.time() + recheck_every
    while len(done) < len(wanted) and not gw.stopping.is_set():
        if client_gone(request):
            return
        now = loop.time()
        if now >= deadline:
            return
        if now >= recheck_at:
            missing = {cid: key for cid, key in wanted.items() if cid not in done}
            chunk = lines((await gw.results.stored_many(missing)).values())
            if chunk:
                await resp.write(chunk)
            recheck_every = min(recheck_every * 2, _RECHECK_MAX_S)
            recheck_at = loop.time() + recheck_every
            continue
        try:
            batch = [
                await asyncio.wait_for(arrivals.get(), min(deadline, recheck_at, now + 1) - now)
            ]
        except TimeoutError:
            continue
        while not arrivals.empty():
            batch.append(arrivals.get_nowait())
        chunk = lines(batch)
        if chunk:
            await resp.write(chunk)
            recheck_every = _RECHECK_FIRST_S
            recheck_at = loop.time() + recheck_every
