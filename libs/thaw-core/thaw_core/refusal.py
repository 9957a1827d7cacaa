"""Refusing a message: the one way a service says "not this one".

A refusal is a structured log line plus an ``ErrorEvent`` on
``thaw.event.error.<service>``, so an operator sees what was sent and why it
was refused. A JetStream message that cannot be decoded is terminated, never
redelivered: it would fail the same way again. ``Service.reject`` and
``Service.decode`` are these functions bound to the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from thaw_core.bus import Bus, settle
from thaw_core.contract import error_event_subject
from thaw_core.schema import ErrorEvent

T = TypeVar("T")

ERROR_CODES = ("malformed", "unknown", "too_large", "internal", "forged")
# Payloads above this are refused by ``decode`` without being parsed.
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
# How long ``reject`` waits for JetStream to store an ErrorEvent.
REJECT_PUBLISH_TIMEOUT_S = 3.0


# An Invoke's result key (thaw_core.result_proof) never goes into a log or an
# ErrorEvent: a refused input's preview shows that it had one, not what it is.
_KEY_FIELD = re.compile(r'("key"\s*:\s*")[^"]*("?)')


def _redacted(preview: str) -> str:
    return _KEY_FIELD.sub(r"\1<redacted>\2", preview)


# A service's ``reject`` bound to it: (subject, payload, code, error).
Reject = Callable[[str, bytes, str, str], Awaitable[None]]


async def reject(
    bus: Bus,
    service: str,
    log: logging.Logger,
    subject: str,
    payload: bytes,
    code: str,
    error: str,
) -> None:
    """Log a refused message and publish its ``ErrorEvent``. Never raises: a
    refusal must not take the service down."""
    try:
        if code not in ERROR_CODES:
            error, code = f"[{code}] {error}", "internal"
        preview = _redacted(bytes(payload[:256]).decode("utf-8", "replace"))
        log.warning(
            "rejected message",
            extra={"subject": subject, "code": code, "error": error, "payload_preview": preview},
        )
        event = ErrorEvent(
            service=service,
            subject=subject,
            code=code,  # type: ignore[arg-type]
            error=error[:2000],
            payload_preview=preview,
        )
        await asyncio.wait_for(
            bus.publish(error_event_subject(service), event), timeout=REJECT_PUBLISH_TIMEOUT_S
        )
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        with contextlib.suppress(Exception):
            log.error(
                "could not publish ErrorEvent", extra={"subject": subject, "error": err_text(exc)}
            )


async def decode(msg: Any, decoder: msgspec.json.Decoder[T], refuse: Reject) -> T | None:
    """Decode a bus message; on failure ``refuse`` it, terminate it (a JetStream
    message is never redelivered) and return None."""
    data: bytes = msg.data
    if len(data) > MAX_PAYLOAD_BYTES:
        await refuse(msg.subject, data, "too_large", f"{len(data)} bytes")
        await term(msg)
        return None
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        what = (
            "does not match the schema"
            if isinstance(exc, msgspec.ValidationError)
            else "is not valid JSON"
        )
        await refuse(msg.subject, data, error_code(exc), f"message {what}: {exc}")
        await term(msg)
        return None


def error_code(exc: msgspec.DecodeError) -> str:
    """Return "unknown" for a type tag nobody knows, "malformed" for anything else."""
    text = str(exc)
    if isinstance(exc, msgspec.ValidationError) and "Invalid value" in text and "`$.type`" in text:
        return "unknown"
    return "malformed"


async def term(msg: Any) -> None:
    """Terminate a JetStream message (no redelivery); a no-op for core messages."""
    await settle(msg, "term")


def err_text(exc: BaseException) -> str:
    """An exception as one short line: ``TypeName: message``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
