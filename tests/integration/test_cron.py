"""The cron service on real NATS and Postgres: fires land on the function's
INVOKE subject once each (two replicas, a restart after a crash mid-fire),
downtime ends in one catch-up fire, stopping or redeploying an app replaces
its schedules. Apps are written into Postgres as the gateway's deploy does."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Self

import msgspec
import pytest
from fixtures.wait import eventually
from thaw_core.bus import Bus
from thaw_core.config import Settings
from thaw_core.contract import INVOKE_STREAM, app_event_subject, invoke_subject
from thaw_core.db import Database
from thaw_core.schema import AppEvent, FunctionSpec, Invoke
from thaw_cron.plan import Fire, ScheduleKey
from thaw_cron.service import CronService

_invoke = msgspec.json.Decoder(Invoke)


@pytest.fixture
async def db(make_db: Callable[..., Awaitable[Database]]) -> Database:
    return await make_db()


@pytest.fixture
def settings(nats_url: str, db: Database) -> Settings:
    state = tempfile.mkdtemp(prefix="thaw-cron-")
    return Settings.from_env(
        {"THAW_STATE_DIR": state, "THAW_NATS_URL": nats_url, "THAW_DATABASE_URL": db.dsn,
         "THAW_BLOB_URL": f"file://{state}", "THAW_NODE_ID": "cron-test"}
    )  # fmt: skip


@pytest.fixture
async def start_cron(settings: Settings) -> AsyncIterator[Callable[[], Awaitable[CronService]]]:
    running: list[tuple[CronService, asyncio.Task[None]]] = []

    async def start() -> CronService:
        svc = CronService(settings)
        await svc.start()
        running.append((svc, asyncio.create_task(svc.run())))
        return svc

    yield start
    for svc, task in running:
        await svc.shutdown(timeout_s=5)
        await asyncio.wait_for(task, 10)


async def deploy(
    db: Database, bus: Bus, app: str, schedule: dict[str, Any], *,
    ephemeral: bool = False, deployed_ago_s: float = 0.0,
) -> int:  # fmt: skip
    """What the gateway's deploy writes, then its AppEvent; returns the version."""
    spec = msgspec.convert(
        {"name": "tick", "module": "m", "qualname": "tick", "schedule": schedule}, FunctionSpec
    )
    version = await db.fetchval(
        "INSERT INTO apps (id, name, version, ephemeral) VALUES ($1, $2, 1, $3)"
        " ON CONFLICT (name) DO UPDATE SET version = apps.version + 1, state = 'deployed'"
        " RETURNING version",
        "ap-" + uuid.uuid4().hex, app, ephemeral,
    )  # fmt: skip
    await db.execute(
        "INSERT INTO app_versions (app, version, bundle_sha256, created_at)"
        " VALUES ($1, $2, 'x', now() - make_interval(secs => $3))",
        app, version, deployed_ago_s,
    )  # fmt: skip
    await db.execute(
        "INSERT INTO functions (app, name, version, spec) VALUES ($1, 'tick', $2, $3)",
        app, version, msgspec.to_builtins(spec),
    )  # fmt: skip
    await bus.publish(app_event_subject(app), AppEvent(app=app, version=version, state="deployed"))
    return version


class Inputs:
    """What INVOKE stored for one function, as an agent would take it."""

    def __init__(self, bus: Bus, app: str) -> None:
        self.bus, self.app = bus, app
        self.got: list[tuple[str, Invoke]] = []
        self._sub: Any = None

    async def __aenter__(self) -> Self:
        self._sub = await self.bus.js.pull_subscribe(
            invoke_subject(self.app, "tick"), durable=f"t_{self.app}", stream=INVOKE_STREAM.name
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._sub.unsubscribe()

    async def take(self) -> list[tuple[str, Invoke]]:
        try:
            msgs = await self._sub.fetch(100, timeout=0.2)
        except TimeoutError:
            msgs = []
        for m in msgs:
            self.got.append((m.headers["Nats-Msg-Id"], _invoke.decode(m.data)))
            await m.ack()
        return self.got

    async def at_least(self, n: int, timeout_s: float) -> list[tuple[str, Invoke]]:
        return await eventually(
            lambda: self._enough(n), timeout_s, f"{n} fires of {self.app} on INVOKE"
        )

    async def _enough(self, n: int) -> list[tuple[str, Invoke]] | None:
        got = await self.take()
        return got if len(got) >= n else None


def fire_times(got: list[tuple[str, Invoke]]) -> list[int]:
    return [int(msg_id.rsplit(":", 1)[1]) for msg_id, _ in got]


async def test_a_period_fires_as_a_no_argument_json_call_in_the_call_history(
    db: Database, bus: Bus, start_cron: Callable[[], Awaitable[CronService]]
) -> None:
    await start_cron()
    app = "cron-" + uuid.uuid4().hex[:8]
    async with Inputs(bus, app) as inputs:
        await deploy(db, bus, app, {"kind": "period", "seconds": 1})
        got = await inputs.at_least(3, timeout_s=30)
    _, invoke = got[0]
    assert (invoke.app, invoke.function, invoke.codec) == (app, "tick", "json")
    assert msgspec.json.decode(invoke.args) == {"args": [], "kwargs": {}}
    times = fire_times(got)
    assert [b - a for a, b in itertools.pairwise(times)] == [1000] * (len(times) - 1)
    calls = await db.fetch("SELECT call_id, codec FROM calls WHERE app = $1", app)
    assert {r["call_id"] for r in calls} >= {inv.call_id for _, inv in got}


async def test_two_replicas_never_fire_a_time_twice(
    db: Database, bus: Bus, start_cron: Callable[[], Awaitable[CronService]]
) -> None:
    await asyncio.gather(start_cron(), start_cron())
    app = "cron-" + uuid.uuid4().hex[:8]
    async with Inputs(bus, app) as inputs:
        await deploy(db, bus, app, {"kind": "period", "seconds": 1})
        got = await inputs.at_least(6, timeout_s=40)
    times = fire_times(got)
    assert len(times) == len(set(times)), f"a fire time came twice: {times}"
    assert [b - a for a, b in itertools.pairwise(times)] == [1000] * (len(times) - 1)


async def test_restart_publishes_what_a_crash_left_claimed_and_catches_up_once(
    db: Database, bus: Bus, start_cron: Callable[[], Awaitable[CronService]]
) -> None:
    app = "cron-" + uuid.uuid4().hex[:8]
    async with Inputs(bus, app) as inputs:
        # Deployed 30 s ago with a 10 s Period; the crashed service had claimed
        # the 10 s fire but not published it; 20 s and 30 s passed while down.
        version = await deploy(db, bus, app, {"kind": "period", "seconds": 10}, deployed_ago_s=30.5)
        anchor = await db.fetchval(
            "SELECT floor(extract(epoch FROM created_at) * 1000)::bigint FROM app_versions"
            " WHERE app = $1", app,
        )  # fmt: skip
        crashed = Fire(ScheduleKey(app, "tick", version), anchor + 10_000)
        await db.execute(
            "INSERT INTO schedule_fires (app, function, version, fire_ms, call_id, claimed_by)"
            " VALUES ($1, 'tick', $2, $3, $4, 'crashed')",
            app, version, crashed.fire_ms, crashed.call_id,
        )  # fmt: skip
        await start_cron()
        got = await inputs.at_least(2, timeout_s=20)
    assert fire_times(got) == [anchor + 10_000, anchor + 30_000]
    assert got[0][1].call_id == crashed.call_id

    # Marked published once the publish is acked: the input may be seen first.
    async def all_marked() -> bool:
        unpublished = await db.fetchval(
            "SELECT count(*) FROM schedule_fires WHERE app = $1 AND published_at IS NULL", app
        )
        return unpublished == 0

    await eventually(all_marked, 10, "every claimed fire marked published")


async def test_stop_removes_schedules_redeploy_replaces_them_ephemeral_has_none(
    db: Database, bus: Bus, start_cron: Callable[[], Awaitable[CronService]]
) -> None:
    svc = await start_cron()
    app = "cron-" + uuid.uuid4().hex[:8]
    await deploy(db, bus, app, {"kind": "period", "seconds": 3600})
    await eventually(lambda: _planned(svc, {(app, 1)}), 10, "v1 planned")
    await deploy(db, bus, app, {"kind": "cron", "cron": "0 9 * * *", "timezone": "Europe/Paris"})
    await eventually(lambda: _planned(svc, {(app, 2)}), 10, "v2 replaces v1")
    await db.execute("UPDATE apps SET state = 'stopped' WHERE name = $1", app)
    await bus.publish(app_event_subject(app), AppEvent(app=app, version=2, state="stopped"))
    await eventually(lambda: _planned(svc, set()), 10, "stopped: no schedules")
    other = "cron-" + uuid.uuid4().hex[:8]
    await deploy(db, bus, other, {"kind": "period", "seconds": 1}, ephemeral=True)
    await deploy(db, bus, app, {"kind": "period", "seconds": 3600})
    await eventually(lambda: _planned(svc, {(app, 3)}), 10, "only the non-ephemeral app")


async def _planned(svc: CronService, want: set[tuple[str, int]]) -> bool:
    return {(k.app, k.version) for k in svc.plan.schedule_keys()} == want
