"""``thaw.Period`` and ``thaw.Cron``: when a deployed function runs by itself.

Each records into ``FunctionSpec.schedule`` as a dict the cron service reads:
``{"kind": "period", "seconds": 3600.0}`` or
``{"kind": "cron", "cron": "0 9 * * *", "timezone": "Europe/Paris"}``.
"""

from __future__ import annotations

from typing import Any

from thaw._env import is_local
from thaw.exception import InvalidError


class Schedule:
    def spec(self) -> dict[str, Any]:
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
        if self.seconds < 1:
            raise InvalidError(f"a Period must be at least one second, got {self.seconds}s")

    def spec(self) -> dict[str, Any]:
        return {"kind": "period", "seconds": self.seconds}

    def __repr__(self) -> str:
        return f"Period(seconds={self.seconds:g})"


class Cron(Schedule):
    """A cron expression (five fields), in ``timezone`` (an IANA name, UTC by default)."""

    def __init__(self, cron_string: str, timezone: str = "UTC") -> None:
        if len(cron_string.split()) != 5:
            raise InvalidError(
                f"invalid cron expression {cron_string!r}: expected five fields "
                "(minute hour day-of-month month day-of-week), e.g. '0 9 * * *'"
            )
        if is_local():
            # Checked where the user can fix it, not in every container that imports the app.
            _check_cron(cron_string)
            _check_timezone(timezone)
        self.cron_string = cron_string
        self.timezone = timezone

    def spec(self) -> dict[str, Any]:
        return {"kind": "cron", "cron": self.cron_string, "timezone": self.timezone}

    def __repr__(self) -> str:
        return f"Cron({self.cron_string!r}, timezone={self.timezone!r})"


def _check_cron(cron_string: str) -> None:
    from croniter import croniter

    if not croniter.is_valid(cron_string):
        raise InvalidError(f"invalid cron expression {cron_string!r}")


def _check_timezone(timezone: str) -> None:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as e:
        raise InvalidError(
            f"unknown timezone {timezone!r} (use an IANA name like 'Europe/Paris')"
        ) from e
