"""One call's input, its result, and its cancellation."""

from __future__ import annotations

from typing import Literal

import msgspec

from thaw_core.schema.base import Message, now

Codec = Literal["pickle", "json"]
CallStatus = Literal["success", "failure", "timeout", "cancelled", "terminated"]


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


class CancelCall(Message, tag="cancel_call"):
    call_id: str
    terminate_containers: bool = False
