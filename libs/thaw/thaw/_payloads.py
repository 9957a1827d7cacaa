"""Large call arguments and results through the gateway's blob store.

Pickled arguments over ``THAW_PAYLOAD_INLINE_BYTES`` are uploaded first
(``PUT /v1/payloads/{sha256}``, the gateway streams them to the blob store)
and the call names them by the ``PayloadRef`` that answers. A result whose
value is kept apart (``CallResult.value_ref``) is fetched from ``GET
/v1/calls/{call_id}/value`` once its proof verified, and checked against the
sha256 the proof covers before anything reads it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import msgspec
from thaw_core.api import CallResult, PayloadStored
from thaw_core.config import Settings
from thaw_core.schema import PayloadRef

from thaw import exception
from thaw.transport import gateway_error

if TYPE_CHECKING:
    from thaw.transport import Transport

_stored = msgspec.json.Decoder(PayloadStored)
_json_value = msgspec.json.Decoder()


def inline_limit() -> int:
    """The largest pickled arguments sent inside the call request."""
    return Settings.from_env().payload_inline_bytes


async def upload(transport: Transport, payload: bytes, token: str | None) -> PayloadRef:
    sha = hashlib.sha256(payload).hexdigest()
    status, answer = await transport.request(
        "PUT", f"/v1/payloads/{sha}", payload, content_type="application/octet-stream"
    )
    if status not in (200, 201):
        raise gateway_error(status, answer, token=token)
    try:
        return _stored.decode(answer).ref
    except msgspec.DecodeError as e:
        raise exception.ServiceError(f"the gateway answered an upload unreadably: {e}") from None


async def fetched(transport: Transport, result: CallResult, token: str | None) -> CallResult:
    """``result`` with a value kept apart fetched into it (checked against its sha256)."""
    ref = result.value_ref
    if ref is None:
        return result
    status, data = await transport.request("GET", f"/v1/calls/{result.call_id}/value")
    if status != 200:
        raise gateway_error(status, data, token=token)
    if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
        raise exception.ExecutionError(
            f"the value of call {result.call_id} arrived as {len(data)} bytes that do not"
            f" hash to the {ref.size} bytes its result names; it was not unpickled"
        )
    if result.codec == "json":
        return msgspec.structs.replace(result, value=_json_value.decode(data), value_ref=None)
    return msgspec.structs.replace(result, value_b64=data, value_ref=None)
