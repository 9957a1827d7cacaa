"""One call's input, its result, and its cancellation."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from thaw_core.schema.base import Message, now
from thaw_core.schema.web import WebHead

Codec = Literal["pickle", "json"]
CallStatus = Literal["success", "failure", "timeout", "cancelled", "terminated"]

# A call id is a subject token (thaw.result.<call_id>) and a URL path segment
# (/v1/calls/<call_id>). Ids made by the gateway are "fc-<32 hex>"; another
# language publishing on the bus picks its own, within this. An invoke client's
# ids are "<client>.<token>" (``contract.client_call_id``): two tokens, so its
# results fall under a subject prefix that only it may read.
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
CALL_ID_RE = re.compile(rf"^(?:[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}\.)?{_TOKEN}$")


def is_call_id(value: str) -> bool:
    return CALL_ID_RE.fullmatch(value) is not None


class JsonArgs(msgspec.Struct, forbid_unknown_fields=True):
    """The arguments of one input with the json codec, as the gateway encodes
    them and the container's runtime decodes them."""

    args: list[Any] = []
    kwargs: dict[str, Any] = {}


_SHA256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class PayloadRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Arguments or a return value kept in the blob store rather than in the
    message (over ``Settings.payload_inline_bytes``): the sha256 of its bytes,
    their size, and the hour it was stored in (unix time // 3600), which
    names its key (``contract.payload_key``) and when it is deleted (with the
    results of that hour, ``contract.RESULTS_STREAM``'s max age later)."""

    sha256: _SHA256
    size: Annotated[int, msgspec.Meta(ge=0)]
    hour: Annotated[int, msgspec.Meta(ge=0)]


class Invoke(Message, tag="invoke"):
    """One input. ``args`` is ``codec``-encoded: pickle of ``(args, kwargs)``,
    or JSON ``{"args": [...], "kwargs": {...}}``. The gateway never unpickles."""

    call_id: str
    app: str
    function: str
    method: str | None = None
    # Constructor arguments of a class (thaw.parameter()), same codec as args.
    params: bytes = b""
    codec: Codec = "pickle"
    args: bytes = b""
    # Instead of args, when they are large: where they are kept (args is then empty).
    args_ref: Annotated[
        PayloadRef | None,
        msgspec.Meta(
            description="Arguments too large for a message (over THAW_PAYLOAD_INLINE_BYTES,"
            " 256 KiB by default), kept in the blob store at payloads/<hour>/<sha256>; args is"
            " then empty. A client of another language may always send small args inline."
        ),
    ] = None
    # 1 for the first try; a retry is a new message with attempt + 1.
    attempt: int = 1
    # A retry waits until then (the agent naks it with the remaining delay).
    not_before: float = 0.0
    map_id: str = ""
    index: int = 0
    created_at: float = msgspec.field(default_factory=now)
    # A web endpoint's HTTP request (``schema.web``); args are then empty.
    web: WebHead | None = None
    # The call's secret (32 random bytes; thaw_core.result_proof): the agent
    # signs the Result with it. Made by whoever makes the input, read only by
    # agents; never in a result, a log or an API response. Without one, the
    # result carries no proof and no reader can tell it from a forgery.
    key: Annotated[
        bytes,
        msgspec.Meta(
            description="The call's secret: 32 random bytes, fresh for every call; the agent"
            " signs the Result with it (see Result.proof). Never share it."
        ),
    ] = b""


class Result(Message, tag="result"):
    call_id: str
    status: CallStatus
    codec: Codec = "pickle"
    # Success: the codec-encoded return value (a list of items for a generator).
    value: bytes = b""
    # Instead of value, when it is large: where it is kept (value is then
    # empty). The proof covers its sha256 in place of sha256(value).
    value_ref: Annotated[
        PayloadRef | None,
        msgspec.Meta(
            description="A value too large for a message (over THAW_PAYLOAD_INLINE_BYTES),"
            " kept in the blob store at payloads/<hour>/<sha256>; value is then empty and the"
            " proof covers this sha256 in place of sha256(value). Over HTTP:"
            " GET /v1/calls/{call_id}/value."
        ),
    ] = None
    # Failure: the pickled exception when it pickles, and always its text.
    exc: bytes = b""
    error: str = ""
    traceback: str = ""
    attempts: int = 1
    map_id: str = ""
    index: int = 0
    container_id: str = ""
    started_at: float = 0.0
    finished_at: float = msgspec.field(default_factory=now)
    # HMAC-SHA256 under Invoke.key of the fields above (thaw_core.result_proof
    # says which bytes); a result whose proof fails is a forgery.
    proof: Annotated[
        bytes,
        msgspec.Meta(
            description="HMAC-SHA256 under the Invoke's key of: the ASCII bytes"
            " 'thaw.result.v1', then call_id, status, codec, sha256(value) (value_ref.sha256"
            " when the value is kept in the blob store), sha256(exc),"
            " error, traceback, attempts, map_id, index, container_id, started_at,"
            " finished_at; strings as a 4-byte big-endian length and their UTF-8 bytes,"
            " digests as 32 raw bytes, integers as 8-byte big-endian signed, floats as"
            " 8-byte big-endian IEEE 754 doubles. Empty when the Invoke had no key."
        ),
    ] = b""


class _CallIdOnly(msgspec.Struct):
    """What can still be read from a malformed Invoke: who is waiting for it."""

    call_id: str = ""


class _KeyOnly(msgspec.Struct):
    """... and the key its result is to be signed with."""

    key: bytes = b""


_call_id_only = msgspec.json.Decoder(_CallIdOnly)
_key_only = msgspec.json.Decoder(_KeyOnly)


def readable_call_id(data: bytes) -> str:
    """The valid call id of a message that does not decode as an Invoke, so
    that its caller can be told; '' when none can be read."""
    try:
        call_id = _call_id_only.decode(data).call_id
    except msgspec.DecodeError:
        return ""
    return call_id if is_call_id(call_id) else ""


def readable_call(data: bytes) -> tuple[str, bytes]:
    """``readable_call_id``, and the result key when one can be read too (b''
    otherwise): the refusal that tells the caller is signed like any result."""
    call_id = readable_call_id(data)
    try:
        key = _key_only.decode(data).key if call_id else b""
    except msgspec.DecodeError:
        key = b""
    return call_id, key


def result_for(
    invoke: Invoke, status: CallStatus, *, container_id: str = "", **outcome: Any
) -> Result:
    """The result of one attempt of ``invoke``, whoever answers it (its agent,
    or the scheduler for an input nobody consumes): what identifies the call
    comes from the input, ``outcome`` is how it ended."""
    return Result(
        call_id=invoke.call_id,
        status=status,
        codec=invoke.codec,
        attempts=invoke.attempt,
        map_id=invoke.map_id,
        index=invoke.index,
        container_id=container_id,
        **outcome,
    )


class CancelCall(Message, tag="cancel_call"):
    call_id: str
    terminate_containers: bool = False
