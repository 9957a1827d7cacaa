"""One call's input, its result, and its cancellation."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from thaw_core.schema.base import Message, now
from thaw_core.schema.web import WebHead

Codec = Literal["pickle", "json"]
CallStatus = Literal["success", "failure", "timeout", "cancelled", "terminated"]

# A call id is a subject token (thaw.result.<call_id>) and a URL path segment
# (/v1/calls/<call_id>). Ids made by the gateway are "fc-<32 hex>"; another
# language publishing on the bus picks its own, within this.
CALL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


def is_call_id(value: str) -> bool:
    return CALL_ID_RE.match(value) is not None


class JsonArgs(msgspec.Struct, forbid_unknown_fields=True):
    """The arguments of one input with the json codec, as the gateway encodes
    them and the container's runtime decodes them."""

    args: list[Any] = []
    kwargs: dict[str, Any] = {}


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
    # 1 for the first try; a retry is a new message with attempt + 1.
    attempt: int = 1
    # A retry waits until then (the agent naks it with the remaining delay).
    not_before: float = 0.0
    map_id: str = ""
    index: int = 0
    created_at: float = msgspec.field(default_factory=now)
    # A web endpoint's HTTP request (``schema.web``); args are then empty.
    web: WebHead | None = None


class Result(Message, tag="result"):
    call_id: str
    status: CallStatus
    codec: Codec = "pickle"
    # Success: the codec-encoded return value (a list of items for a generator).
    value: bytes = b""
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


class _CallIdOnly(msgspec.Struct):
    """What can still be read from a malformed Invoke: who is waiting for it."""

    call_id: str = ""


_call_id_only = msgspec.json.Decoder(_CallIdOnly)


def readable_call_id(data: bytes) -> str:
    """The valid call id of a message that does not decode as an Invoke, so
    that its caller can be told; '' when none can be read."""
    try:
        call_id = _call_id_only.decode(data).call_id
    except msgspec.DecodeError:
        return ""
    return call_id if is_call_id(call_id) else ""


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
