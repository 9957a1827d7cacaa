"""The cron service's lifecycle: it fires the ``Period`` and ``Cron``
schedules of every deployed (not stopped, not ephemeral) app.

A fire is an input on the function's INVOKE subject, the ``Invoke`` the
gateway makes for a json-codec call with no arguments, and a row in the calls
table, so it shows in the call history like any call. Exactly once:

1. claim (schedule, fire time) in Postgres (``store.FireStore.claim``): a
   unique row, so of two replicas only one publishes;
2. publish with a ``Nats-Msg-Id`` made of schedule and fire time
   (``contract.schedule_fire_msg_id``);
3. mark the row published.

At start-up (and every ``refresh_s`` for a replica that died mid-fire) rows
claimed but never marked are published again: INVOKE's duplicate window drops
the copy of a publish that did happen before the crash.

It sleeps until the next fire is due, and wakes early when an app is deployed
or stopped (``thaw.event.app.*``, to every replica) to read the schedules
again; it also reads them every ``refresh_s`` in case an event was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from thaw_core.bus import Msg
from thaw_core.config import Settings
from thaw_core.contract import EVENT_APP, invoke_subject, wildcard
from thaw_core.schedules import to_ms
from thaw_core.schema import Invoke
from thaw_core.service import Service

from thaw_cron.plan import Fire, Plan
from thaw_cron.store import FireStore

# The json codec's "no arguments", as the runtime reads it.
NO_ARGS = msgspec.json.encode({"args": [], "kwargs": {}})
# Read the schedules at least this often even without app events.
REFRESH_S = 30.0
# A claim left unpublished this long is its claimer's crash: publish it again.
# Well inside INVOKE's duplicate window, so a publish that did happen is dropped.
REPUBLISH_AFTER_S = 10.0
# Fires older than this go from schedule_fires (the latest of each stays).
KEEP_DAYS = 7.0
# After a failed round (Postgres or NATS away), the next one is this much later.
RETRY_S = 1.0


class CronService(Service):
    name = "cron"
    uses_db = True
    uses_blob = False

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        refresh_s: float = REFRESH_S,
    ) -> None:
        super().__init__(settings)
        self.clock = clock
        self.refresh_s = refresh_s
        self.plan = Plan()
        self._store: FireStore | None = None
        self._apps_sub: Any = None
        self._wake = asyncio.Event()
        self._reload = True
        # The last round's failure ("" after a good one), for health probes.
        self.error = ""

    @property
    def store(self) -> FireStore:
        if self._store is None:
            raise RuntimeError("the cron service is not started")
        return self._store

    async def setup(self) -> None:
        assert self.db is not None
        self._store = FireStore(self.db, self.instance)
        # Plain subscription, no queue group: every replica must hear of a deploy.
        self._apps_sub = await self.bus.serve(wildcard(EVENT_APP), self.on_app_event)

    async def teardown(self) -> None:
        if self._apps_sub is not None:
            with contextlib.suppress(Exception):
                await self._apps_sub.unsubscribe()
            self._apps_sub = None

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.fire_schedules]

    async def checks(self) -> dict[str, str]:
        return {"schedules": self.error or "ok"}

    async def on_app_event(self, msg: Msg) -> None:
        # What changed is read from Postgres; the event only says "look again".
        self._reload = True
        self._wake.set()

    # ------------------------------------------------------------ the loop

    async def fire_schedules(self) -> None:
        republish_after_s = 0.0  # at start-up: every claim a crash left unpublished
        next_refresh = 0.0
        while not self.stopping.is_set():
            loop_now = time.monotonic()
            try:
                if self._reload or loop_now >= next_refresh:
                    self._reload = False
                    next_refresh = loop_now + self.refresh_s
                    await self._refresh(republish_after_s)
                    republish_after_s = REPUBLISH_AFTER_S
                for fire in self.plan.due(to_ms(self.clock())):
                    await self.fire(fire)
                self.error = ""
                wake_ms = self.plan.wake_at(to_ms(self.clock()))
                delay = next_refresh - time.monotonic()
                if wake_ms is not None:
                    delay = min(delay, (wake_ms - to_ms(self.clock())) / 1000)
            except Exception as e:  # Postgres or NATS away: retry soon
                self.log.exception("schedule round failed")
                self.error = f"last round failed: {type(e).__name__}: {e}"
                self._reload = True
                delay = RETRY_S
            await self._sleep(delay)

    async def _sleep(self, delay_s: float) -> None:
        self._wake.clear()
        if delay_s <= 0 or self._reload:
            return
        waits = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self.stopping.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=delay_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _refresh(self, republish_after_s: float) -> None:
        schedules, problems = await self.store.schedules()
        for problem in problems:
            self.log.error("schedule cannot fire", extra={"problem": problem})
        self.plan.replace(schedules)
        for fire in await self.store.unpublished(republish_after_s):
            self.log.info("publishing a claimed fire again", extra={"msg_id": fire.msg_id})
            await self._publish(fire, await self.store.call_key(fire))
        await self.store.prune(KEEP_DAYS)

    async def fire(self, fire: Fire) -> bool:
        """Claim and publish ``fire``; False when another replica has it."""
        key = await self.store.claim(fire)
        self.plan.fired(fire)
        won = key is not None
        if key is not None:
            await self._publish(fire, key)
            self.log.info(
                "schedule fired",
                extra={"app": fire.key.app, "function": fire.key.function,
                       "call_id": fire.call_id, "late_ms": to_ms(self.clock()) - fire.fire_ms},
            )  # fmt: skip
        return won

    async def _publish(self, fire: Fire, key: bytes) -> None:
        k = fire.key
        invoke = Invoke(
            call_id=fire.call_id, app=k.app, function=k.function, codec="json", args=NO_ARGS,
            key=key,
        )  # fmt: skip
        await self.bus.publish(invoke_subject(k.app, k.function), invoke, msg_id=fire.msg_id)
        await self.store.published(fire)
