"""Schedules: what ``FunctionSpec.schedule`` holds, how it is checked, and when
it fires.

The SDK checks a schedule where the user writes it, the gateway again at
deploy (a deploy request need not come from the SDK), the gateway shows the
next fire in ``thaw app show`` and the cron service fires it: all four use
this module, so they cannot disagree.

Fire times are whole milliseconds since the epoch (``int``): replicas of the
cron service compute them independently and claim them by value, so they must
come out bit-identical, which floats added up from a deploy time do not.

- ``Period``: fires at ``anchor + k * period`` for k >= 1, the anchor being the
  deploy of the function's version.
- ``Cron``: fires at the expression's times in its IANA timezone; a
  daylight-saving change is handled as croniter handles it (a time skipped by
  the spring change fires at the first valid minute after it; a time the
  autumn change repeats fires twice, once per UTC offset).
"""

from __future__ import annotations

import math
import zoneinfo
from datetime import UTC, datetime
from typing import Any

import msgspec
from croniter import croniter

MIN_PERIOD_S = 1.0


class ScheduleError(ValueError):
    """A schedule that cannot fire; the message names what is wrong."""


class _Schedule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True,
                tag_field="kind"):  # fmt: skip
    pass


class PeriodSchedule(_Schedule, tag="period"):
    """Every ``seconds``, counted from the deploy of the function's version."""

    seconds: float


class CronSchedule(_Schedule, tag="cron"):
    """A five-field cron expression in an IANA timezone."""

    cron: str
    timezone: str = "UTC"


ScheduleSpec = PeriodSchedule | CronSchedule


def check_period(seconds: float) -> None:
    if not seconds >= MIN_PERIOD_S:
        raise ScheduleError(f"a Period must be at least one second, got {seconds:g}s")


def check_cron(expression: str) -> None:
    if len(expression.split()) != 5:
        raise ScheduleError(
            f"invalid cron expression {expression!r}: expected five fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 9 * * *'"
        )
    if not croniter.is_valid(expression):
        raise ScheduleError(f"invalid cron expression {expression!r}")


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise ScheduleError(
            f"unknown timezone {name!r} (use an IANA name like 'Europe/Paris')"
        ) from e


def parse_schedule(raw: dict[str, Any] | ScheduleSpec) -> ScheduleSpec:
    """The checked schedule of a ``FunctionSpec.schedule``; raises ``ScheduleError``."""
    try:
        spec: ScheduleSpec = (
            raw if isinstance(raw, _Schedule) else msgspec.convert(raw, ScheduleSpec)  # type: ignore[arg-type]
        )
    except msgspec.ValidationError as e:
        raise ScheduleError(
            f"schedule {raw!r} is neither a Period ({{'kind': 'period', 'seconds': S}}) nor a"
            f" Cron ({{'kind': 'cron', 'cron': EXPR, 'timezone': TZ}}): {e}"
        ) from None
    match spec:
        case PeriodSchedule(seconds=seconds):
            check_period(seconds)
        case CronSchedule(cron=expression, timezone=tz):
            check_cron(expression)
            check_timezone(tz)
    return spec


def describe(spec: ScheduleSpec) -> str:
    match spec:
        case PeriodSchedule(seconds=seconds):
            return f"every {seconds:g}s"
        case CronSchedule(cron=expression, timezone=tz):
            return f"cron {expression} ({tz})"


def to_ms(t: float) -> int:
    """Seconds since the epoch, floored to whole milliseconds."""
    return math.floor(t * 1000)


def next_fire(spec: ScheduleSpec, anchor_ms: int, after_ms: int) -> int:
    """The first fire time strictly after ``after_ms`` (and after ``anchor_ms``)."""
    after_ms = max(after_ms, anchor_ms)
    match spec:
        case PeriodSchedule(seconds=seconds):
            period = _period_ms(seconds)
            return anchor_ms + ((after_ms - anchor_ms) // period + 1) * period
        case CronSchedule(cron=expression, timezone=tz):
            start = _local(after_ms, tz)
            return to_ms(croniter(expression, start).get_next(datetime).timestamp())


def latest_due(spec: ScheduleSpec, anchor_ms: int, last_ms: int | None, now_ms: int) -> int | None:
    """The latest fire time ``t`` with ``max(anchor, last) < t <= now``, or None.

    Only the latest: after downtime a schedule fires once, not once per
    period it missed."""
    floor = anchor_ms if last_ms is None else max(anchor_ms, last_ms)
    if now_ms <= floor:
        return None
    match spec:
        case PeriodSchedule(seconds=seconds):
            period = _period_ms(seconds)
            due = anchor_ms + ((now_ms - anchor_ms) // period) * period
        case CronSchedule(cron=expression, timezone=tz):
            # get_prev is strict: start just past now so that a fire at now counts.
            start = _local(now_ms + 1, tz)
            due = to_ms(croniter(expression, start).get_prev(datetime).timestamp())
    return due if due > floor else None


def _period_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _local(ms: int, tz: str) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(check_timezone(tz))
