"""The runtime's trace span of one input (``RuntimeSpan``).

The agent hands each input the W3C ``traceparent`` of its own span; the
runtime answers, in the input's ``Output``, a child span of it from when the
input arrived to when it ended. The runtime runs on the image's own Python,
without OpenTelemetry (its dependencies are kept few), so the span is made
here by hand: the W3C format is four dash-separated hex fields.
"""

from __future__ import annotations

import os
import time

from thaw_core.container_protocol import Output, RuntimeSpan

# traceparent: version, trace id, parent span id, flags.
_VERSION, _TRACE_HEX, _SPAN_HEX = "00", 32, 16
_SAMPLED = 0x01


def _parent(traceparent: str) -> tuple[str, str] | None:
    """(trace id, parent span id) of a sampled ``traceparent``; None otherwise."""
    parts = traceparent.split("-")
    if len(parts) != 4 or parts[0] != _VERSION:
        return None
    _, trace_id, parent_id, flags = parts
    try:
        if (
            len(trace_id) != _TRACE_HEX
            or len(parent_id) != _SPAN_HEX
            or not int(trace_id, 16)
            or not int(parent_id, 16)
            or not int(flags, 16) & _SAMPLED
        ):
            return None
    except ValueError:
        return None
    return trace_id, parent_id


def _span_id() -> str:
    while True:  # an all-zero span id is invalid
        span_id = os.urandom(8).hex()
        if int(span_id, 16):
            return span_id


def span_of(
    traceparent: str, received_at: float, output: Output, call_id: str
) -> RuntimeSpan | None:
    """The span of the input ``output`` ends, received at ``received_at``;
    None when the input was not traced."""
    parent = _parent(traceparent)
    if parent is None:
        return None
    end = output.finished_at or time.time()
    return RuntimeSpan(
        trace_id=parent[0],
        span_id=_span_id(),
        parent_id=parent[1],
        name="runtime input",
        start_ns=int(min(received_at, end) * 1e9),
        end_ns=int(end * 1e9),
        attributes={
            "thaw.call_id": call_id,
            "thaw.input_id": output.input_id,
            "thaw.status": output.status,
            "thaw.user_code_s": f"{max(0.0, end - (output.started_at or end)):.6f}",
            "process.pid": str(os.getpid()),
        },
    )
