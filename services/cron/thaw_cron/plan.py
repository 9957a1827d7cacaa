"""Which fires are due, and when to wake next: pure, clock passed in.

A schedule is one function version's ``Period``/``Cron``; redeploying makes a
new version, so a new schedule (its Period counted from the new deploy), and
the old one is dropped with the next ``replace``. Each schedule remembers the
latest fire claimed for it (by anyone): only a later time is due, and only the
latest due time, so downtime ends in one catch-up fire rather than a burst.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from thaw_core.contract import schedule_fire_msg_id
from thaw_core.schedules import ScheduleSpec, latest_due, next_fire


class ScheduleKey(NamedTuple):
    app: str
    function: str
    version: int


@dataclass
class Scheduled:
    key: ScheduleKey
    spec: ScheduleSpec
    # The deploy of the version (a Period counts from it; nothing before it is due).
    anchor_ms: int
    last_ms: int | None = None


@dataclass(frozen=True)
class Fire:
    key: ScheduleKey
    fire_ms: int

    @property
    def msg_id(self) -> str:
        k = self.key
        return schedule_fire_msg_id(k.app, k.function, k.version, self.fire_ms)

    @property
    def call_id(self) -> str:
        """The same for every replica, so a fire is one call whoever publishes it."""
        return "fs-" + hashlib.sha256(self.msg_id.encode()).hexdigest()[:32]


class Plan:
    def __init__(self, schedules: Iterable[Scheduled] = ()) -> None:
        self._schedules: dict[ScheduleKey, Scheduled] = {}
        self.replace(schedules)

    def __len__(self) -> int:
        return len(self._schedules)

    def schedule_keys(self) -> list[ScheduleKey]:
        return list(self._schedules)

    def replace(self, schedules: Iterable[Scheduled]) -> None:
        """The schedules now deployed; a fire this process saw claimed after
        they were read is kept."""
        old = self._schedules
        self._schedules = {}
        for s in schedules:
            known = old.get(s.key)
            if known is not None and known.last_ms is not None:
                s.last_ms = known.last_ms if s.last_ms is None else max(s.last_ms, known.last_ms)
            self._schedules[s.key] = s

    def due(self, now_ms: int) -> list[Fire]:
        fires = []
        for s in self._schedules.values():
            at = latest_due(s.spec, s.anchor_ms, s.last_ms, now_ms)
            if at is not None:
                fires.append(Fire(s.key, at))
        return sorted(fires, key=lambda f: f.fire_ms)

    def fired(self, fire: Fire) -> None:
        """``fire`` is claimed (here or elsewhere): not due again."""
        s = self._schedules.get(fire.key)
        if s is not None and (s.last_ms is None or fire.fire_ms > s.last_ms):
            s.last_ms = fire.fire_ms

    def wake_at(self, now_ms: int) -> int | None:
        """When the next fire is due (None: no schedules)."""
        times = [
            next_fire(s.spec, s.anchor_ms, max(now_ms, s.last_ms or now_ms))
            for s in self._schedules.values()
        ]
        return min(times, default=None)
