"""One input's trace spans on a node.

The agent's span covers an input from its hand-over to a container to the
container's answer, as a child of the context its publisher put in the
message's headers (the gateway's, for an HTTP or SDK call). The runtime's
span is a child of the agent's: the container reports it in its ``Output``
(it has no collector to talk to) and the agent exports it under a resource
of its own (``thaw-runtime``, the container's id), after checking that it
names this input's trace and the agent's span as its parent: a container
runs user code, so what it says is capped and checked, never trusted.
"""

from __future__ import annotations

import functools
import logging

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode
from thaw_core.bus import Msg, trace_context
from thaw_core.container_protocol import Output, RuntimeSpan
from thaw_core.schema import Invoke
from thaw_core.telemetry import export_span, recording

log = logging.getLogger("thaw.agent.tracing")

_tracer = trace.get_tracer("thaw.agent")
_SCOPE = InstrumentationScope("thaw.runtime")
# What a container may put in its span: a few short attributes.
MAX_ATTRIBUTES = 16
MAX_KEY = 64
MAX_VALUE = 256
MAX_NAME = 128


def start_input_span(msg: Msg, invoke: Invoke, container_id: str, node_id: str) -> Span | None:
    """The agent's span of one input, started now (ended by :func:`end_input_span`);
    None when spans go nowhere (``telemetry.recording``)."""
    if not recording():
        return None
    return _tracer.start_span(
        f"input {invoke.app}.{invoke.function}",
        context=trace_context(msg),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.destination.name": msg.subject,
            "thaw.call_id": invoke.call_id,
            "thaw.attempt": invoke.attempt,
            "thaw.container_id": container_id,
            "thaw.node_id": node_id,
        },
    )


def traceparent(span: Span | None) -> str:
    """The W3C traceparent naming ``span`` as the parent ('' when not recording)."""
    if span is None:
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent", "")


def end_input_span(
    span: Span, status: str, error: str = "", output: Output | None = None, **resource: str
) -> None:
    """End the agent's span of an input with how it ended, exporting the
    runtime's span of it first when the container reported one
    (``resource``: what names the container, e.g. ``container_id``)."""
    if output is not None and output.span is not None:
        _export_runtime_span(span.get_span_context(), output, output.span, resource)
    span.set_attribute("thaw.status", status)
    if status != "success":
        span.set_status(Status(StatusCode.ERROR, error[:MAX_VALUE] or status))
    span.end()


@functools.lru_cache(maxsize=1024)
def _runtime_resource(resource: tuple[tuple[str, str], ...]) -> Resource:
    """The resource of a container's spans, made once per container:
    ``Resource.create`` runs the SDK's resource detectors (on a thread pool
    of its own), which cost more than the rest of an input on the node."""
    named = dict(resource)
    return Resource.create(
        {"service.name": "thaw-runtime", "service.namespace": "thaw"}
        | {f"thaw.{k}": v for k, v in named.items()}
        | {"service.instance.id": named.get("container_id", "")}
    )


def _hex(value: str, digits: int) -> int | None:
    if len(value) != digits:
        return None
    try:
        number = int(value, 16)
    except ValueError:
        return None
    return number or None


def _export_runtime_span(
    parent: SpanContext, output: Output, reported: RuntimeSpan, resource: dict[str, str]
) -> None:
    span_id = _hex(reported.span_id, 16)
    if (
        not parent.is_valid
        or span_id is None
        or _hex(reported.trace_id, 32) != parent.trace_id
        or _hex(reported.parent_id, 16) != parent.span_id
        or not 0 < reported.start_ns <= reported.end_ns
    ):
        log.warning("dropped a container's span that is not its input's", extra={"span": reported})
        return
    attributes = {
        k[:MAX_KEY]: v[:MAX_VALUE] for k, v in list(reported.attributes.items())[:MAX_ATTRIBUTES]
    }
    export_span(
        ReadableSpan(
            name=reported.name[:MAX_NAME],
            context=SpanContext(parent.trace_id, span_id, False, parent.trace_flags),
            parent=parent,
            resource=_runtime_resource(tuple(sorted(resource.items()))),
            attributes=attributes,
            kind=SpanKind.INTERNAL,
            status=Status(StatusCode.OK if output.status == "success" else StatusCode.ERROR),
            start_time=reported.start_ns,
            end_time=reported.end_ns,
            instrumentation_scope=_SCOPE,
        )
    )
