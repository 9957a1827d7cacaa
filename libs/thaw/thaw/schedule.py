"""``thaw.Period`` and ``thaw.Cron``: when a deployed function runs by itself.

Each records into ``FunctionSpec.schedule`` as a
``thaw_core.schedules.PeriodSchedule`` or ``CronSchedule`` (on the wire
``{"kind": "period", "seconds": 3600.0}`` or
``{"kind": "cron", "cron": "0 9 * * *", "timezone": "Europe/Paris"}``).
The checks are thaw_core's, the same the gateway makes at deploy.
"""

from __future__ import annotations

from typing import Any

from thaw_core.schedules import (
    CronSchedule,
    PeriodSchedule,
    ScheduleError,
    ScheduleSpec,
    check_cron,
    check_period,
    check_timezone,
)

from thaw._env import is_local
from thaw.exception import InvalidError


class Schedule:
    def spec(self) -> ScheduleSpec:
        raise NotImplementedError


class Period(Schedule):
    """Every so often, counted from the deploy."""

    def __init__(
        self,
        *,
        weeks: float = 0,
        days: float = 0,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
    ) -> None:
        self.seconds = float(((weeks * 7 + days) * 24 + hours) * 3600 + minutes * 60 + seconds)
        _checked(check_period, self.seconds)

    def spec(self) -> ScheduleSpec:
        return PeriodSchedule(seconds=self.seconds)

    def __repr__(self) -> str:
        return f"Period(seconds={self.seconds:g})"


class Cron(Schedule):
    """A cron expression (five fields), in ``timezone`` (an IANA name, UTC by default)."""

    def __init__(self, cron_string: str, timezone: str = "UTC") -> None:
        if len(cron_string.split()) != 5 or is_local():
            # Fully checked where the user can fix it, not in every container
            # that imports the app.
            _checked(check_cron, cron_string)
        if is_local():
            _checked(check_timezone, timezone)
        self.cron_string = cron_string
        self.timezone = timezone

    def spec(self) -> ScheduleSpec:
        return CronSchedule(cron=self.cron_string, timezone=self.timezone)

    def __repr__(self) -> str:
        return f"Cron({self.cron_string!r}, timezone={self.timezone!r})"


def _checked(check: Any, value: Any) -> None:
    try:
        check(value)
    except ScheduleError as e:
        raise InvalidError(str(e)) from None
