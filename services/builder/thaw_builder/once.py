"""Make a layer (or a registry base) once across every builder: what the
catalog has is reused; otherwise one builder makes it under the layer's
Postgres lock while the others report ``waiting``, then find it made."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from thaw_core.schema import StepStatus

from thaw_builder.catalog import Catalog
from thaw_builder.plan import PlannedStep

T = TypeVar("T")


class Progress(Protocol):
    async def progress(
        self, step: PlannedStep, status: StepStatus, *, elapsed_s: float = 0.0
    ) -> None: ...


async def once(
    catalog: Catalog,
    ps: PlannedStep,
    reporter: Progress,
    have: Callable[[], Awaitable[T | None]],
    make: Callable[[], Awaitable[T]],
) -> tuple[T, bool]:
    """What ``have`` finds, or ``make`` run under the step's layer lock,
    by one builder at a time (the others wait, then find it); True when
    made here."""
    found = await have()
    if found is None:
        async with catalog.layer_lock(ps.layer_id, wait=False) as mine:
            if mine:
                return await _make_locked(ps, reporter, have, make)
        await reporter.progress(ps, "waiting")
        async with catalog.layer_lock(ps.layer_id):
            return await _make_locked(ps, reporter, have, make)
    await reporter.progress(ps, "cached")
    return found, False


async def _make_locked(
    ps: PlannedStep,
    reporter: Progress,
    have: Callable[[], Awaitable[T | None]],
    make: Callable[[], Awaitable[T]],
) -> tuple[T, bool]:
    # Whoever held the lock before us may have made it.
    found = await have()
    if found is not None:
        await reporter.progress(ps, "cached")
        return found, False
    await reporter.progress(ps, "building")
    t0 = time.monotonic()
    made = await make()
    await reporter.progress(ps, "built", elapsed_s=round(time.monotonic() - t0, 3))
    return made, True
