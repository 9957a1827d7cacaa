"""Schedules at the gateway: a deploy's schedules are checked before anything
is recorded (``check_schedules``), and ``thaw app show`` lists each scheduled
function's next and last fire and its last run's outcome (``schedule_infos``).
The cron service does the firing; the fire times are ``thaw_core.schedules``',
the same the cron service computes."""

from __future__ import annotations

import time

from thaw_core.api import ScheduleInfo
from thaw_core.schedules import ScheduleError, describe, next_fire, parse_schedule, to_ms
from thaw_core.schema import FunctionSpec

from thaw_gateway.catalog import DeployedApp
from thaw_gateway.errors import bad_request
from thaw_gateway.state import Gateway


def check_schedules(functions: list[FunctionSpec]) -> None:
    """Refuse a schedule that cannot fire, naming the function and what is wrong."""
    for i, spec in enumerate(functions):
        if spec.schedule is None:
            continue
        where = f"functions[{i}] ({spec.name!r})"
        if spec.kind == "class":
            raise bad_request(f"{where}: a schedule runs a function; a class cannot take one")
        try:
            parse_schedule(spec.schedule)
        except ScheduleError as e:
            raise bad_request(f"{where}: {e}") from None


_LAST_FIRES = """
SELECT DISTINCT ON (f.function) f.function, f.fire_ms, f.call_id,
       f.published_at IS NOT NULL AS published, coalesce(c.result_key, ''::bytea) AS result_key
FROM schedule_fires f LEFT JOIN calls c ON c.call_id = f.call_id
WHERE f.app = $1
ORDER BY f.function, f.fire_ms DESC
"""
_DEPLOYED_MS = """
SELECT floor(extract(epoch FROM created_at) * 1000)::bigint
FROM app_versions WHERE app = $1 AND version = $2
"""


async def schedule_infos(gw: Gateway, app: DeployedApp) -> list[ScheduleInfo]:
    scheduled = {n: s.schedule for n, s in app.functions.items() if s.schedule is not None}
    if not scheduled:
        return []
    last = {r["function"]: r for r in await gw.db.fetch(_LAST_FIRES, app.name)}
    fires = app.state == "deployed" and not app.ephemeral
    anchor_ms = await gw.db.fetchval(_DEPLOYED_MS, app.name, app.version) if fires else None
    now_ms = to_ms(time.time())
    out = []
    for function, schedule in sorted(scheduled.items()):
        info = ScheduleInfo(function=function, schedule=describe(schedule))
        row = last.get(function)
        if anchor_ms is not None:
            after = max(now_ms, row["fire_ms"]) if row is not None else now_ms
            info.next_fire_at = next_fire(schedule, anchor_ms, after) / 1000
        if row is not None:
            info.last_fire_at = row["fire_ms"] / 1000
            info.last_call_id = row["call_id"]
            info.last_status = await _status(gw, row["call_id"], row["result_key"], row["published"])
        out.append(info)
    return out


async def _status(gw: Gateway, call_id: str, key: bytes, published: bool) -> str:
    outcome = await gw.results.stored(call_id, key)
    if outcome is None:
        return "pending" if published else "claimed"
    return outcome.status
