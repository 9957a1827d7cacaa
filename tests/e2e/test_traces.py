"""One OpenTelemetry trace follows a call across the platform: a client's
HTTP request to the gateway, the gateway's publish on the bus, the agent
that takes the input and the runtime in the container that runs it. Every
service exports over OTLP/HTTP to a receiver in this process, as they would
to a collector; the test sends the request with a ``traceparent`` of its own
and reads that trace back: one trace id, a span from each process, each the
child of the one before."""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from fixtures.otlp import OtlpReceiver, ReceivedSpan
from fixtures.platform import Platform
from fixtures.wait import eventually

INTERNAL, SERVER, PRODUCER, CONSUMER = 1, 2, 4, 5  # OTLP's Span.SpanKind values
WAIT_S = 120.0


@pytest.fixture(scope="module")
async def traced_platform(
    platform_factory: Callable[..., Any], otlp_receiver: OtlpReceiver
) -> Platform:
    return await platform_factory(
        env={
            "THAW_OTLP_ENDPOINT": otlp_receiver.url,
            # Export within a fraction of a second rather than the default 5 s.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )


def _call(platform: Platform, traceparent: str) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{platform.gateway_url}/v1/functions/traced/double/calls?wait=60",
        data=json.dumps({"args": [21]}).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {platform.token}",
            "Content-Type": "application/json",
            "traceparent": traceparent,
        },
    )
    with urllib.request.urlopen(req, timeout=90) as r:
        return json.loads(r.read())


def _one(spans: list[ReceivedSpan], **match: object) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(s.service, s.name, s.span_id, s.parent_id) for s in spans])
    return found[0]


async def test_one_trace_across_gateway_bus_agent_and_runtime(
    traced_platform: Platform, otlp_receiver: OtlpReceiver
) -> None:
    traced_platform.deploy("traced.py")
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    result = _call(traced_platform, f"00-{trace_id}-{client_span}-01")
    assert result["status"] == "success" and result["value"] == 42, result

    def whole() -> list[ReceivedSpan] | None:
        spans = otlp_receiver.trace(trace_id)
        # The request's span ends (and is exported) once the answer went out.
        kinds = {(s.service, s.kind) for s in spans}
        every = {("thaw-gateway", SERVER), ("thaw-agent", CONSUMER), ("thaw-runtime", INTERNAL)}
        return spans if every <= kinds else None

    spans = await eventually(whole, WAIT_S, f"spans of trace {trace_id} from every process")

    # The gateway's span of the request is the child of the client's.
    server = _one(spans, service="thaw-gateway", kind=SERVER)
    assert server.parent_id == client_span
    assert server.attributes["http.route"] == "/v1/functions/{app}/{function}/calls"
    # Its publish of the input on the bus, the child of the request's span.
    publish = _one(spans, service="thaw-gateway", kind=PRODUCER, parent_id=server.span_id)
    assert publish.attributes["messaging.destination.name"] == "thaw.invoke.traced.double"
    # The agent took the input from the bus: its span is the publish's child.
    agent = _one(spans, service="thaw-agent", kind=CONSUMER)
    assert agent.parent_id == publish.span_id
    assert agent.attributes["thaw.call_id"] == result["call_id"]
    assert agent.attributes["thaw.status"] == "success"
    # The runtime that ran it, in the container that answered, is the agent's child.
    runtime = _one(spans, service="thaw-runtime")
    assert runtime.parent_id == agent.span_id
    assert runtime.resource["service.instance.id"] == result["container_id"]
    assert runtime.attributes["thaw.call_id"] == result["call_id"]
    assert runtime.attributes["thaw.status"] == "success"
    # Distinct processes: each resource names its own.
    instances = {s.service: s.resource["service.instance.id"] for s in (server, agent, runtime)}
    assert len(set(instances.values())) == 3, instances
