"""A service's answer to a health probe: one check per dependency, run
concurrently, each bounded so that a hung dependency reads "timed out"
instead of hanging the probe."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from thaw_core.refusal import err_text
from thaw_core.schema import HealthReply

# How long one dependency check of a health probe may take.
HEALTH_CHECK_TIMEOUT_S = 1.5


async def check(aw: Awaitable[Any] | None) -> str:
    """One dependency's check: "ok", or why not (None: never connected)."""
    if aw is None:
        return "not connected"
    try:
        result = await asyncio.wait_for(aw, HEALTH_CHECK_TIMEOUT_S)
    except TimeoutError:
        return f"timed out after {HEALTH_CHECK_TIMEOUT_S:g}s"
    except Exception as exc:  # noqa: BLE001 - a failing check is reported, not raised
        return err_text(exc)
    if result is False:
        return "ping failed"
    return "ok"


async def _extra(checks: Callable[[], Awaitable[dict[str, str]]]) -> dict[str, str]:
    try:
        return await asyncio.wait_for(checks(), HEALTH_CHECK_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - a failing check is reported, not raised
        return {"service": err_text(exc)}


async def assess(
    *,
    service: str,
    instance: str,
    started_at: float,
    nats_connected: bool,
    probes: Mapping[str, Awaitable[Any] | None],
    extra: Callable[[], Awaitable[dict[str, str]]],
    stopping: bool,
) -> HealthReply:
    """The ``HealthReply``: "ok" when every check is, else "degraded"."""
    checks = {"nats": "ok" if nats_connected else "not connected"}
    more, *results = await asyncio.gather(_extra(extra), *(check(p) for p in probes.values()))
    checks.update(zip(probes, results, strict=True))
    checks.update(more)
    status = "ok" if all(v == "ok" for v in checks.values()) else "degraded"
    if stopping:
        status, checks["service"] = "degraded", "stopping"
    return HealthReply(
        service=service,
        status=status,
        checks=checks,
        pid=os.getpid(),
        started_at=started_at,
        instance=instance,
    )
