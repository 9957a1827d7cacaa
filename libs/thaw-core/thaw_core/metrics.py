"""Prometheus metrics of every thaw process, in one registry.

Every metric is defined here, so that a name means one thing everywhere; each
service moves the ones it knows about (the agent: calls, latencies, container
starts, snapshot cache; the scheduler: pending inputs; the builder: builds;
the gateway: calls issued). A service serves them on ``THAW_METRICS_PORT``
(0, the default: a free port, which its health reply names in
``metrics_url``); the gateway also answers them at ``GET /metrics``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds: from a fast warm call to a slow cold start.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

CALLS = Counter(
    "thaw_calls_total",
    "Calls finished, by function and final status",
    ("app", "function", "status"),
    registry=REGISTRY,
)
CALL_SECONDS = Histogram(
    "thaw_call_duration_seconds",
    "How long a call ran in its container, by function",
    ("app", "function"),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CALLS_ISSUED = Counter(
    "thaw_calls_issued_total",
    "Calls accepted by the gateway, by function",
    ("app", "function"),
    registry=REGISTRY,
)
RESULTS_REFUSED = Counter(
    "thaw_results_refused_total",
    "Results refused because their proof does not verify under the call's key (forged)",
    ("service",),
    registry=REGISTRY,
)
PENDING_INPUTS = Gauge(
    "thaw_pending_inputs",
    "Inputs waiting for a container, by function",
    ("app", "function"),
    registry=REGISTRY,
)
RUNNING_INPUTS = Gauge(
    "thaw_running_inputs",
    "Inputs handed to a container and not yet acknowledged, by function",
    ("app", "function"),
    registry=REGISTRY,
)
CONTAINER_STARTS = Counter(
    "thaw_container_starts_total",
    "Container starts: cold, or restored from a memory snapshot (ok or failed)",
    ("kind", "outcome"),
    registry=REGISTRY,
)
CONTAINER_START_SECONDS = Histogram(
    "thaw_container_start_seconds",
    "From the start command to a running container: cold start or restore",
    ("kind",),
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CACHE_LOOKUPS = Counter(
    "thaw_cache_lookups_total",
    "Local cache lookups (snapshot, layer, bundle): hit or miss",
    ("cache", "result"),
    registry=REGISTRY,
)
BUILDS = Counter(
    "thaw_builds_total",
    "Image builds, by outcome",
    ("outcome",),
    registry=REGISTRY,
)
BUILD_SECONDS = Histogram(
    "thaw_build_duration_seconds",
    "How long an image build took",
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=REGISTRY,
)


@functools.lru_cache(maxsize=4096)
def _call_series(app: str, function: str, status: str) -> tuple[Counter, Histogram]:
    """The two series a finished call counts in, looked up once per function
    and status: ``labels`` takes a lock and builds its key on every call,
    most of what counting costs an agent per input."""
    return CALLS.labels(app, function, status), CALL_SECONDS.labels(app, function)


def call_finished(app: str, function: str, status: str, seconds: float | None) -> None:
    calls, call_seconds = _call_series(app, function, status)
    calls.inc()
    if seconds is not None and seconds >= 0:
        call_seconds.observe(seconds)


def container_started(kind: str, ok: bool, seconds: float) -> None:
    CONTAINER_STARTS.labels(kind, "ok" if ok else "failed").inc()
    if ok:
        CONTAINER_START_SECONDS.labels(kind).observe(seconds)


def cache_lookup(cache: str, hit: bool) -> None:
    CACHE_LOOKUPS.labels(cache, "hit" if hit else "miss").inc()


class _ContainerStates(Collector):
    """``thaw_containers{state}``: counted when scraped, from the states the
    process's container source answers (the agent's manager)."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[str]] | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        if self.source is None:
            return
        counts = dict.fromkeys(("starting", "ready", "draining", "failed", "stopped"), 0)
        for state in self.source():
            counts[state] = counts.get(state, 0) + 1
        family = GaugeMetricFamily("thaw_containers", "Containers on this node, by state",
                                   labels=("state",))  # fmt: skip
        for state, n in counts.items():
            family.add_metric((state,), n)
        yield family


_container_states = _ContainerStates()
REGISTRY.register(_container_states)


def count_containers_from(source: Callable[[], Iterable[str]]) -> None:
    """Where ``thaw_containers`` is read from: the states of this node's containers."""
    _container_states.source = source


def exposition() -> tuple[bytes, str]:
    """The metrics in the text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_server: Any = None
_lock = threading.Lock()


def serve(host: str, port: int) -> int:
    """Serve ``/metrics`` from a thread of this process (once per process:
    services sharing a process share the server); answers the bound port."""
    global _server
    with _lock:
        if _server is None:
            _server, _ = start_http_server(port, addr=host, registry=REGISTRY)
        return int(_server.server_port)


__all__ = [
    "BUILDS",
    "BUILD_SECONDS",
    "CALLS_ISSUED",
    "PENDING_INPUTS",
    "RUNNING_INPUTS",
    "cache_lookup",
    "call_finished",
    "container_started",
    "count_containers_from",
    "exposition",
    "serve",
]
