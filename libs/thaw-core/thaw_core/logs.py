"""Structured logging: one JSON object per line on stderr.

Every service process calls :func:`setup_logging` once (``thaw_core.service.main``
does it). A line carries ``ts``, ``level``, ``logger``, ``msg``, the service name
and any fields passed through ``extra=``::

    log.warning("rejected message", extra={"subject": s, "code": "malformed"})

    {"ts": "2025-01-01T12:00:00.123Z", "level": "WARNING", "logger": "thaw.scheduler",
     "service": "scheduler", "msg": "rejected message", "subject": "...", "code": "malformed"}
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from typing import Any, TextIO

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()) | {
    "message",
    "asctime",
    "taskName",
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value[:200].decode("utf-8", "replace")
    return str(value)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line; ``extra=`` fields become top-level keys."""

    def __init__(self, *, service: str | None = None, static: dict[str, Any] | None = None):
        super().__init__()
        self.static: dict[str, Any] = dict(static or {})
        if service:
            self.static.setdefault("service", service)

    def format(self, record: logging.LogRecord) -> str:
        ts = _dt.datetime.fromtimestamp(record.created, tz=_dt.UTC)
        out: dict[str, Any] = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            **self.static,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = _jsonable(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For humans at a terminal (``thaw up`` in the foreground)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {
            k: v
            for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        }
        if extras:
            line += " " + " ".join(f"{k}={_jsonable(v)}" for k, v in extras.items())
        return line


def setup_logging(
    level: str = "INFO",
    *,
    service: str | None = None,
    stream: TextIO | None = None,
    json_lines: bool = True,
) -> None:
    """Replace the root logger's handlers with one structured handler.

    Idempotent: calling it again reconfigures rather than duplicating output.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(service=service) if json_lines else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_level(level))
    # Libraries that are chatty at INFO.
    for noisy in ("asyncio", "aiohttp.access", "nats"):
        logging.getLogger(noisy).setLevel(max(_level(level), logging.WARNING))


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    return value if isinstance(value, int) else logging.INFO
