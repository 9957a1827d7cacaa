"""The snapshots service's lifecycle: the memory snapshot catalog
(``catalog.py``), served to agents and fed by events.

- ``thaw.snapshots.lookup`` (request/reply, queue group: replicas answer
  once): ``SnapshotLookup`` -> ``SnapshotLookupReply`` with the best ready
  snapshot compatible with the asking node, else a claim to make one, else
  neither (someone of its fingerprint class is making it right now).
- ``thaw.event.snapshot.*`` (EVENTS, durable ``snapshots-lifecycle``): agents'
  ``SnapshotCreated`` / ``SnapshotCreateFailed`` / ``SnapshotRestored``.
- ``thaw.event.app.*`` (EVENTS, durable ``snapshots-apps``): the gateway's
  ``AppEvent``; a deploy obsoletes the app's older versions' snapshots, a stop
  all of them.
- GC: every ``gc_interval_s`` (``THAW_SNAPSHOTS_GC_INTERVAL_S``, 30 s),
  obsolete what no longer restores anywhere, then delete obsolete snapshots'
  blobs and rows.

Malformed messages are refused with ``Service.reject`` (an ``ErrorEvent``)
and the service carries on; a lookup that cannot be read is answered with an
error reply so that the agent fails fast and starts cold.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from thaw_core import contract
from thaw_core.bus import Msg
from thaw_core.config import Settings
from thaw_core.schema import (
    AppEvent,
    SnapshotCreated,
    SnapshotCreateFailed,
    SnapshotEvent,
    SnapshotLookup,
    SnapshotRestored,
    decoder,
    encode,
)
from thaw_core.service import Service, term

from thaw_snapshots.catalog import Catalog, Policy, created_problem, lookup_problem

EVENTS_STREAM = contract.EVENTS_STREAM.name
LOOKUP_SUBJECT = contract.SNAPSHOT_LOOKUP
LIFECYCLE_SUBJECT = contract.wildcard(contract.EVENT_SNAPSHOT)
APPS_SUBJECT = contract.wildcard(contract.EVENT_APP)
# How many obsolete snapshots one GC round deletes at most.
GC_BATCH = 200
GC_INTERVAL_ENV = "THAW_SNAPSHOTS_GC_INTERVAL_S"
DEFAULT_GC_INTERVAL_S = 30.0


def gc_interval_from_env() -> float:
    """Seconds between GC rounds: ``THAW_SNAPSHOTS_GC_INTERVAL_S``, else 30."""
    raw = os.environ.get(GC_INTERVAL_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_GC_INTERVAL_S
    except ValueError:
        raise ValueError(f"{GC_INTERVAL_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{GC_INTERVAL_ENV}={raw!r} must be above 0")
    return value


class SnapshotsService(Service):
    name = "snapshots"
    uses_db = True
    uses_blob = True
    lifecycle_durable = "snapshots-lifecycle"
    apps_durable = "snapshots-apps"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        policy: Policy | None = None,
        gc_interval_s: float | None = None,
    ) -> None:
        super().__init__(settings)
        self.policy = policy or Policy()
        self.gc_interval_s = gc_interval_s if gc_interval_s is not None else gc_interval_from_env()
        self._catalog: Catalog | None = None
        self._lookup_sub: Any = None
        self._lookup_decoder = decoder(SnapshotLookup)
        self._event_decoder = decoder(SnapshotEvent)
        self._app_decoder = decoder(AppEvent)
        self.gc_rounds = 0
        # The last GC round's failure ("" after a good round), for health probes.
        self.gc_error = ""

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise RuntimeError("the snapshots service is not started")
        return self._catalog

    async def setup(self) -> None:
        assert self.db is not None
        self._catalog = Catalog(self.db, self.policy)
        for durable, subject in (
            (self.lifecycle_durable, LIFECYCLE_SUBJECT),
            (self.apps_durable, APPS_SUBJECT),
        ):
            await self.bus.ensure_consumer(
                EVENTS_STREAM, durable, filter_subject=subject, ack_wait_s=30, max_deliver=20
            )
        self._lookup_sub = await self.bus.serve(LOOKUP_SUBJECT, self.on_lookup, queue=LOOKUP_SUBJECT)

    async def teardown(self) -> None:
        if self._lookup_sub is not None:
            with contextlib.suppress(Exception):
                await self._lookup_sub.unsubscribe()
            self._lookup_sub = None

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.consume_lifecycle, self.consume_apps, self.collect_garbage]

    async def checks(self) -> dict[str, str]:
        return {"gc": self.gc_error or "ok"}

    # ------------------------------------------------------------ lookups

    async def on_lookup(self, msg: Msg) -> None:
        req = await self.decode(msg, self._lookup_decoder)
        if req is None:
            await self._refuse(msg, "400", "the lookup is not a valid SnapshotLookup")
            return
        problem = lookup_problem(req)
        if problem is not None:
            await self.reject(msg.subject, msg.data, "malformed", problem)
            await self._refuse(msg, "400", problem)
            return
        reply = await self.catalog.lookup(req)
        if msg.reply:
            await msg.respond(encode(reply))

    async def _refuse(self, msg: Msg, code: str, error: str) -> None:
        """Answer a request with an error (``Bus.request`` raises it as BusRequestError)."""
        await self.bus.reply_error(msg, error, code)

    # ------------------------------------------------------------ events

    async def consume_lifecycle(self) -> None:
        await self.bus.consume(
            EVENTS_STREAM, self.lifecycle_durable, self.on_lifecycle, batch=50, stop=self.stopping
        )

    async def on_lifecycle(self, msg: Msg) -> None:
        match await self.decode(msg, self._event_decoder):
            case None:
                return  # refused and terminated by decode()
            case SnapshotCreated(snapshot=info):
                problem = created_problem(info)
                if problem is not None:
                    await self.reject(msg.subject, msg.data, "malformed", problem)
                    await term(msg)
                    return
                await self.catalog.created(info)
            case SnapshotCreateFailed(snapshot_id=sid, error=error):
                await self.catalog.drop_claim(sid, error)
            case SnapshotRestored(snapshot_id=sid) as restored:
                if await self.catalog.restored(restored) is None:
                    self.log.info("restore of an unknown snapshot", extra={"snapshot_id": sid})

    async def consume_apps(self) -> None:
        await self.bus.consume(
            EVENTS_STREAM, self.apps_durable, self.on_app_event, batch=50, stop=self.stopping
        )

    async def on_app_event(self, msg: Msg) -> None:
        event = await self.decode(msg, self._app_decoder)
        if event is not None:
            await self.catalog.app_changed(event)

    # ------------------------------------------------------------ GC

    async def collect_garbage(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.gc_once()
                self.gc_error = ""
            except Exception as e:  # Postgres or the blob store away: next round
                self.log.exception("snapshot GC round failed")
                self.gc_error = f"last GC round failed: {type(e).__name__}: {e}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.gc_interval_s)

    async def gc_once(self) -> int:
        """One round; returns how many snapshots it deleted."""
        assert self.blob is not None
        await self.catalog.sweep()
        deleted = 0
        for snapshot_id, blob_key in await self.catalog.obsolete_rows(GC_BATCH):
            if blob_key:
                try:
                    await self.blob.delete(blob_key)
                except Exception as e:  # noqa: BLE001 - keep the row; retried next round
                    self.log.warning(
                        "could not delete a snapshot blob",
                        extra={"snapshot_id": snapshot_id, "blob_key": blob_key, "error": repr(e)},
                    )
                    continue
            if await self.catalog.forget(snapshot_id, blob_key):
                deleted += 1
        if deleted:
            self.log.info("snapshot GC", extra={"deleted": deleted})
        self.gc_rounds += 1
        return deleted
