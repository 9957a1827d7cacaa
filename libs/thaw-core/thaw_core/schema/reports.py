"""What services and containers report about themselves: health, refused messages, output lines."""

from __future__ import annotations

from typing import Literal

import msgspec

from thaw_core.schema.base import Message, now


class HealthReply(Message, tag="health"):
    service: str
    status: Literal["ok", "degraded"]
    # One entry per dependency ("nats", "postgres", "blob", ...): "ok" or the error.
    checks: dict[str, str] = {}
    pid: int = 0
    started_at: float = 0.0
    instance: str = ""
    # Where this process serves Prometheus metrics (http://host:port/metrics).
    metrics_url: str = ""


class ErrorEvent(Message, tag="error"):
    """Published by a service that refused a message, so that the refusal is
    visible off the box and not only in one process's log."""

    service: str
    subject: str
    # forged: a Result whose proof does not verify (thaw_core.result_proof).
    code: Literal["malformed", "unknown", "too_large", "internal", "forged"]
    error: str
    # The first bytes of the refused payload, for whoever debugs the producer.
    payload_preview: str = ""
    at: float = msgspec.field(default_factory=now)


class LogLine(Message, tag="log"):
    app: str
    function: str
    container_id: str
    stream: Literal["stdout", "stderr", "system"]
    line: str
    at: float = msgspec.field(default_factory=now)
