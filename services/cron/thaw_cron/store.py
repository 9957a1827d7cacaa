"""The cron service's Postgres side: which schedules exist, and the claim of
each fire.

A fire is claimed by inserting its ``schedule_fires`` row (unique per
schedule and fire time) together with its ``calls`` row, in one transaction:
whoever inserts it publishes it, everyone else skips it, and the call is in
the call history from the moment it is claimed.
"""

from __future__ import annotations

from thaw_core.db import Database
from thaw_core.result_proof import new_key
from thaw_core.schedules import ScheduleError, parse_schedule

from thaw_cron.plan import Fire, Scheduled, ScheduleKey

# Every schedule of the current version of each deployed, non-ephemeral app,
# with its deploy time (the Period anchor) and the latest fire claimed for it.
_SCHEDULES = """
SELECT f.app, f.function, f.version, f.spec -> 'schedule' AS schedule,
       floor(extract(epoch FROM v.created_at) * 1000)::bigint AS anchor_ms,
       (SELECT max(s.fire_ms) FROM schedule_fires s
         WHERE s.app = f.app AND s.function = f.function AND s.version = f.version) AS last_ms
FROM deployed_functions f
JOIN apps a ON a.name = f.app
JOIN app_versions v ON v.app = f.app AND v.version = f.version
WHERE NOT a.ephemeral AND jsonb_typeof(f.spec -> 'schedule') = 'object'
"""

_CLAIM = """
INSERT INTO schedule_fires (app, function, version, fire_ms, call_id, claimed_by)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT DO NOTHING
RETURNING call_id
"""

# The fire's calls row and its result key (thaw_core.result_proof): the one
# already recorded, so a fire published again is signed like the first time.
_RECORD_CALL = """
INSERT INTO calls AS c (call_id, app, function, codec, result_key) VALUES ($1, $2, $3, 'json', $4)
ON CONFLICT (call_id) DO UPDATE
  SET result_key = CASE WHEN c.result_key = ''::bytea THEN EXCLUDED.result_key ELSE c.result_key END
RETURNING result_key
"""

_PUBLISHED = """
UPDATE schedule_fires SET published_at = now()
WHERE app = $1 AND function = $2 AND version = $3 AND fire_ms = $4
"""

_UNPUBLISHED = """
SELECT app, function, version, fire_ms FROM schedule_fires
WHERE published_at IS NULL AND claimed_at <= now() - make_interval(secs => $1)
ORDER BY claimed_at
LIMIT 1000
"""

# Old fires go, except the latest of each function: it is what keeps a
# restarted service from firing a long-period schedule's last time again.
_PRUNE = """
DELETE FROM schedule_fires s
WHERE s.published_at IS NOT NULL
  AND s.claimed_at < now() - make_interval(days => $1)
  AND s.fire_ms < (SELECT max(l.fire_ms) FROM schedule_fires l
                    WHERE l.app = s.app AND l.function = s.function)
"""


class FireStore:
    def __init__(self, db: Database, instance: str) -> None:
        self.db = db
        self.instance = instance

    async def schedules(self) -> tuple[list[Scheduled], list[str]]:
        """The schedules to fire, and a problem line for each one that cannot
        fire (a row written before the gateway checked schedules)."""
        found: list[Scheduled] = []
        problems: list[str] = []
        for row in await self.db.fetch(_SCHEDULES):
            key = ScheduleKey(row["app"], row["function"], row["version"])
            try:
                spec = parse_schedule(row["schedule"])
            except ScheduleError as e:
                problems.append(f"{key.app}.{key.function} v{key.version}: {e}")
                continue
            found.append(Scheduled(key, spec, row["anchor_ms"], row["last_ms"]))
        return found, problems

    async def claim(self, fire: Fire) -> bytes | None:
        """Claim ``fire``: its call's result key, or None when someone already has."""
        k = fire.key
        async with self.db.transaction() as con:
            won = await con.fetchval(
                _CLAIM, k.app, k.function, k.version, fire.fire_ms, fire.call_id, self.instance
            )
            if won is None:
                return None
            return await con.fetchval(_RECORD_CALL, fire.call_id, k.app, k.function, new_key())

    async def call_key(self, fire: Fire) -> bytes:
        """The result key of a claimed fire's call (recorded now if it has none)."""
        k = fire.key
        return await self.db.fetchval(_RECORD_CALL, fire.call_id, k.app, k.function, new_key())

    async def published(self, fire: Fire) -> None:
        k = fire.key
        await self.db.execute(_PUBLISHED, k.app, k.function, k.version, fire.fire_ms)

    async def unpublished(self, older_than_s: float) -> list[Fire]:
        """Fires claimed at least ``older_than_s`` ago whose publish was never acked."""
        rows = await self.db.fetch(_UNPUBLISHED, older_than_s)
        return [
            Fire(ScheduleKey(r["app"], r["function"], r["version"]), r["fire_ms"]) for r in rows
        ]

    async def prune(self, keep_days: float) -> None:
        await self.db.execute(_PRUNE, keep_days)
