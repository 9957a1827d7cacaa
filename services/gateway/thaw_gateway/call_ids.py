"""Whose ids a new call gets, and whether a request sent again made it already.

A caller that sends ``request_key`` (with its ``key_seed``) names its calls
itself (``result_proof.derive_call_id``): it knows them before the answer, so
when the gateway dies before answering, the SDK sends the same request again
with ``resend`` and no input is taken twice. Within the bus's duplicate window
the msg-id (the call id) drops a second publish; past it, the call log says
which calls were made, and those are not published again. Only a resend pays
that lookup: a first request goes straight to the bus.
"""

from __future__ import annotations

import secrets

from thaw_core.api import BatchRequest, CallRequest
from thaw_core.result_proof import KeySeed

from thaw_gateway.call_log import IssuedCall
from thaw_gateway.errors import bad_request, conflict
from thaw_gateway.state import Gateway

# A caller's key seed or request key: long enough to be unguessable, short
# enough to be a seed.
KEY_SEED_BYTES = (16, 64)
# The index a batch's map id is derived at: past any item's (MAX_BATCH_ITEMS).
_MAP_ID_INDEX = 2**63

Request = CallRequest | BatchRequest


def new_call_id() -> str:
    # 128 random bits as uuid4 has, at a sixth of its cost (a web request makes one).
    return "fc-" + secrets.token_hex(16)


def new_map_id() -> str:
    return "fm-" + secrets.token_hex(16)


def _check_length(field: str, value: bytes) -> None:
    low, high = KEY_SEED_BYTES
    if value and not low <= len(value) <= high:
        raise bad_request(f"{field} is {len(value)} bytes; it takes {low} to {high} (base64)")


def check_call_keys(body: Request) -> None:
    """400 unless key_seed, request_key and resend go together as they must."""
    _check_length("key_seed", body.key_seed)
    _check_length("request_key", body.request_key)
    if body.request_key and not body.key_seed:
        raise bad_request("request_key names calls from key_seed: send both")
    if body.resend and not body.request_key:
        raise bad_request("resend needs the request_key of the request sent before")


def key_seed(body: Request) -> KeySeed | None:
    """The caller's seed, keyed once for every item of its request (None
    without one: its calls get random ids and keys)."""
    return KeySeed(body.key_seed) if body.key_seed else None


def call_id_of(body: Request, seed: KeySeed | None, index: int = 0) -> str:
    """The call id of item ``index``; ``seed``: ``key_seed(body)``."""
    if body.request_key and seed is not None:
        return seed.call_id(body.request_key, index)
    return new_call_id()


def map_id_of(body: BatchRequest, seed: KeySeed | None) -> str:
    if body.request_key and seed is not None:
        return "fm-" + seed.call_id(body.request_key, _MAP_ID_INDEX)[3:]
    return new_map_id()


async def made_before(
    gw: Gateway, body: Request, app: str, function: str, call_ids: list[str]
) -> dict[str, IssuedCall]:
    """The calls among ``call_ids`` made already, when ``body`` is a resend
    (409 if the caller's request key named calls of another function)."""
    if not body.resend:
        return {}
    made = await gw.calls.lookup(call_ids)
    for cid, call in made.items():
        if (call.app, call.function) != (app, function):
            raise conflict(
                f"call {cid} was made for {call.app}/{call.function}, not {app}/{function}:"
                " a resend carries the request_key of the same request"
            )
    return made
