"""OpenTelemetry tracing set-up.

:func:`setup_telemetry` installs a global tracer provider whose resource names
the service (``service.name``); spans go to

- an OTLP/HTTP exporter when ``settings.otlp_endpoint`` is set
  (``THAW_OTLP_ENDPOINT``, e.g. ``http://collector:4318``),
- else the console (stdout) when ``settings.trace_console`` (``THAW_TRACE_CONSOLE=1``),
- else nowhere: then no SDK provider is installed at all, and the API's
  no-op one stays. Its spans are non-recording: a caller's ``traceparent``
  still passes through (a span made under it carries its context on), but no
  ids are made, nothing is recorded, and untraced bus messages go without a
  header block. A request pays next to nothing for tracing nobody reads:
  where that is so (:func:`recording` is False) the hot paths (a bus
  publish, a consumed message, an agent's input, an HTTP request) make no
  span at all, since even the API's no-op span costs more per input than the
  rest of a publish; the current context still rides on in the headers.

:func:`tracer` works before or without set-up (it then returns the API's no-op tracer).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)

from thaw_core.config import Settings

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None
# The processors set-up added: ``export_span`` hands them spans made elsewhere.
_processors: list[SpanProcessor] = []


def setup_telemetry(settings: Settings, service_name: str) -> TracerProvider | None:
    """Install the global tracer provider (once per process; later calls return
    it); None, installing nothing, when spans go nowhere."""
    global _provider
    if _provider is not None:
        return _provider
    processor = _processor(settings)
    if processor is None:
        return None
    resource = Resource.create(
        {
            "service.name": service_name,
            "service.namespace": "thaw",
            "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
            "host.name": settings.node_id,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    _processors.append(processor)
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def _processor(settings: Settings) -> SpanProcessor | None:
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        log.info("tracing to OTLP endpoint", extra={"endpoint": settings.otlp_endpoint})
        # A short timeout: an unreachable collector must not stall a shutdown.
        return BatchSpanProcessor(
            OTLPSpanExporter(endpoint=_traces_url(settings.otlp_endpoint), timeout=2)
        )
    if settings.trace_console:
        return SimpleSpanProcessor(ConsoleSpanExporter())
    return None


def _traces_url(endpoint: str) -> str:
    # The OTLP/HTTP exporter wants the full traces URL; accept the collector's base URL too.
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def recording() -> bool:
    """Whether spans made here go anywhere (set-up installed a provider)."""
    return _provider is not None


def current_span(
    tracer: trace.Tracer, name: str, **kwargs: object
) -> contextlib.AbstractContextManager[trace.Span | None]:
    """``tracer.start_as_current_span(name, **kwargs)`` when spans go
    somewhere, else a context that makes none (and yields None)."""
    if _provider is None:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(name, **kwargs)  # type: ignore[arg-type]


def export_span(span: ReadableSpan) -> None:
    """Export a finished span this process did not make through its tracer
    (a container's, which reports it to its agent), with its own resource."""
    for processor in _processors:
        processor.on_end(span)


def shutdown_telemetry() -> None:
    """Flush and stop exporters (called at process exit)."""
    global _provider
    if _provider is not None:
        try:
            _provider.shutdown()
        except Exception:  # an unreachable collector must not fail the exit
            log.warning("telemetry shutdown failed", exc_info=True)
        _provider = None
        _processors.clear()
