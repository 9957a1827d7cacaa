"""Schedule math (thaw_core.schedules) and the cron service's plan, on a fake
clock: when a Period or Cron fires, across daylight-saving changes, and how
downtime ends in one catch-up fire."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from thaw_core.schedules import (
    CronSchedule,
    PeriodSchedule,
    ScheduleError,
    latest_due,
    next_fire,
    parse_schedule,
)
from thaw_cron.plan import Fire, Plan, Scheduled, ScheduleKey

PARIS = ZoneInfo("Europe/Paris")
UTC = ZoneInfo("UTC")


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def local(ms_: int, tz: ZoneInfo = PARIS) -> str:
    return datetime.fromtimestamp(ms_ / 1000, tz).isoformat()


def fires_between(spec: CronSchedule | PeriodSchedule, anchor: int, end: int) -> list[int]:
    out, t = [], anchor
    while (t := next_fire(spec, anchor, t)) <= end:
        out.append(t)
    return out


def test_period_fires_every_period_counted_from_the_deploy() -> None:
    spec = PeriodSchedule(seconds=5)
    anchor = 1_000_000_123
    assert fires_between(spec, anchor, anchor + 16_000) == [
        anchor + 5000,
        anchor + 10_000,
        anchor + 15_000,
    ]
    assert latest_due(spec, anchor, None, anchor + 4999) is None
    assert latest_due(spec, anchor, None, anchor + 5000) == anchor + 5000


def test_downtime_ends_in_one_catch_up_fire_of_the_latest_missed_time() -> None:
    spec = PeriodSchedule(seconds=5)
    anchor = 0
    # Last fired at 10 s, down until 33 s: 15, 20, 25, 30 were missed; 30 fires once.
    assert latest_due(spec, anchor, 10_000, 33_000) == 30_000
    assert latest_due(spec, anchor, 30_000, 33_000) is None
    cron = CronSchedule(cron="0 9 * * *")
    day = datetime(2024, 5, 1, tzinfo=UTC)
    last = ms(day.replace(hour=9))
    assert latest_due(cron, 0, last, ms(day.replace(day=4, hour=12))) == ms(
        day.replace(day=4, hour=9)
    )


def test_a_cron_time_before_the_deploy_is_not_due() -> None:
    cron = CronSchedule(cron="0 9 * * *")
    deployed = ms(datetime(2024, 5, 1, 9, 0, 30, tzinfo=UTC))
    assert latest_due(cron, deployed, None, deployed + 1000) is None
    assert local(next_fire(cron, deployed, deployed), UTC) == "2024-05-02T09:00:00+00:00"


def test_every_minute_fires_on_the_minute() -> None:
    cron = CronSchedule(cron="* * * * *")
    start = ms(datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC))
    assert [local(t, UTC)[11:19] for t in fires_between(cron, start, start + 180_000)] == [
        "12:01:00",
        "12:02:00",
        "12:03:00",
    ]


def test_timezone_cron_across_the_spring_change_keeps_local_time() -> None:
    # Paris goes from +01:00 to +02:00 at 02:00 on 2024-03-31.
    cron = CronSchedule(cron="0 9 * * *", timezone="Europe/Paris")
    start = ms(datetime(2024, 3, 29, 12, tzinfo=PARIS))
    got = [local(t) for t in fires_between(cron, start, start + 3 * 86_400_000)]
    assert got == [
        "2024-03-30T09:00:00+01:00",
        "2024-03-31T09:00:00+02:00",
        "2024-04-01T09:00:00+02:00",
    ]
    # 23 hours between the two fires around the change, in UTC.
    assert (
        fires_between(cron, start, start + 3 * 86_400_000)[1]
        - fires_between(cron, start, start + 3 * 86_400_000)[0]
        == 23 * 3_600_000
    )


def test_timezone_cron_across_the_autumn_change_as_croniter_handles_it() -> None:
    # Paris goes back from +02:00 to +01:00 at 03:00 on 2024-10-27: 02:30 happens twice.
    cron = CronSchedule(cron="30 2 * * *", timezone="Europe/Paris")
    start = ms(datetime(2024, 10, 26, 12, tzinfo=PARIS))
    got = [local(t) for t in fires_between(cron, start, start + 2 * 86_400_000)]
    assert got == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T02:30:00+01:00",
        "2024-10-28T02:30:00+01:00",
    ]
    # A time the spring change skips fires at the first valid minute after it.
    skipped = CronSchedule(cron="30 2 * * *", timezone="Europe/Paris")
    start = ms(datetime(2024, 3, 30, 12, tzinfo=PARIS))
    assert local(next_fire(skipped, start, start)) == "2024-03-31T03:00:00+02:00"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"kind": "cron", "cron": "61 * * * *"}, "invalid cron expression '61 \\* \\* \\* \\*'"),
        ({"kind": "cron", "cron": "every day"}, "expected five fields"),
        ({"kind": "cron", "cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "'Mars/Olympus'"),
        ({"kind": "period", "seconds": 0.5}, "at least one second"),
        ({"kind": "hourly"}, "neither a Period"),
    ],
)
def test_bad_schedules_are_refused_naming_what_is_wrong(raw: dict, match: str) -> None:
    with pytest.raises(ScheduleError, match=match):
        parse_schedule(raw)


KEY = ScheduleKey("app", "tick", 1)


def test_plan_fires_each_time_once_and_wakes_at_the_next() -> None:
    plan = Plan([Scheduled(KEY, PeriodSchedule(seconds=2), anchor_ms=0)])
    assert plan.due(1999) == [] and plan.wake_at(1999) == 2000
    fires = []
    for now in range(0, 10_001, 250):  # the clock, ticking
        for fire in plan.due(now):
            plan.fired(fire)
            fires.append(fire.fire_ms)
    assert fires == [2000, 4000, 6000, 8000, 10_000]
    assert plan.wake_at(10_000) == 12_000


def test_plan_after_downtime_fires_once_then_on_schedule() -> None:
    # Restarted at 9.5 s with the last claim at 2 s (read back from Postgres).
    plan = Plan([Scheduled(KEY, PeriodSchedule(seconds=2), anchor_ms=0, last_ms=2000)])
    assert plan.due(9500) == [Fire(KEY, 8000)]
    plan.fired(Fire(KEY, 8000))
    assert plan.due(9500) == [] and plan.wake_at(9500) == 10_000


def test_replacing_schedules_drops_old_versions_and_keeps_claims_seen_since() -> None:
    plan = Plan([Scheduled(KEY, PeriodSchedule(seconds=2), anchor_ms=0)])
    plan.fired(Fire(KEY, 4000))
    # Read before that claim was made: the claim seen in memory wins.
    plan.replace([Scheduled(KEY, PeriodSchedule(seconds=2), anchor_ms=0, last_ms=2000)])
    assert plan.due(5000) == []
    v2 = ScheduleKey("app", "tick", 2)
    plan.replace([Scheduled(v2, PeriodSchedule(seconds=2), anchor_ms=4500)])
    assert len(plan) == 1 and plan.due(6000) == [] and plan.due(6500) == [Fire(v2, 6500)]
    plan.replace([])
    assert plan.wake_at(7000) is None


def test_a_fire_is_the_same_call_for_every_replica() -> None:
    a, b = Fire(KEY, 2000), Fire(ScheduleKey("app", "tick", 1), 2000)
    assert a.call_id == b.call_id and a.msg_id == b.msg_id
    assert a.call_id != Fire(KEY, 4000).call_id
    assert "app" in a.msg_id and "tick" in a.msg_id and "2000" in a.msg_id
