"""``GET /v1/calls/{call_id}/value``: the bytes of a large return value.

A result whose value was too large for its message names it
(``CallResult.value_ref``); this streams it from the blob store. Only to a
token that may see the call, and only what the call's verified result names.
"""

from __future__ import annotations

from aiohttp import web

from thaw_gateway.bodies import path_id
from thaw_gateway.calls import check_call_apps
from thaw_gateway.errors import not_found
from thaw_gateway.payloads import stream_value
from thaw_gateway.state import gateway


async def get_call_value(request: web.Request) -> web.StreamResponse:
    gw = gateway(request)
    call_id = path_id(request, "call_id")
    await check_call_apps(request, gw, [call_id])
    call = await gw.calls.get(call_id)
    if call is None:
        raise not_found(f"no call {call_id!r} was made (or it is older than its retention)")
    result = await gw.results.stored(call_id, call.key)
    if result is None:
        raise not_found(f"call {call_id} has not finished")
    if result.value_ref is None:
        raise not_found(
            f"call {call_id}'s value is inline in its result (GET /v1/calls/{call_id});"
            " only a large value is kept apart"
        )
    return await stream_value(request, result.value_ref)
