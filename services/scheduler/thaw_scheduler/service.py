"""The scheduler's lifecycle: keep ``nodes`` and ``containers`` current from
heartbeats, and run the reconcile loop (``reconcile.py``) that starts and
stops containers so each deployed function has what its load needs.

It consumes ``thaw.event.node.*`` (EVENTS stream) through the durable pull
consumer ``scheduler-nodes``, decodes each message with one decoder built at
start-up, dispatches on the decoded type with ``match``, and upserts
heartbeats into ``nodes``. A malformed message is refused through
``Service.reject`` (ErrorEvent on ``thaw.event.error.scheduler``) and
terminated, never redelivered; the loop carries on with the next one.
Placement and autoscaling policy live in ``placement.py`` and ``autoscale.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec
from thaw_core.bus import Msg
from thaw_core.schema import AppEvent, Fingerprint, FunctionSpec, NodeHeartbeat, decoder
from thaw_core.service import Service, term

from thaw_scheduler.reconcile import DeployedFunction, Reconciler
from thaw_scheduler.snapshot_affinity import ReadySnapshot

log = logging.getLogger(__name__)

NODES_STREAM = "EVENTS"
NODES_DURABLE = "scheduler-nodes"
NODES_SUBJECT = "thaw.event.node.*"

# Every message type the node subjects carry; a union once there are several.
NodeEvent = NodeHeartbeat

# ``inventory`` is the latest heartbeat as JSON; an older heartbeat delivered
# late (redelivery) never overwrites a newer one.
UPSERT_NODE = """
INSERT INTO nodes (id, inventory, last_seen)
VALUES ($1, $2, to_timestamp($3))
ON CONFLICT (id) DO UPDATE SET
    inventory = EXCLUDED.inventory,
    last_seen = EXCLUDED.last_seen
WHERE nodes.last_seen <= EXCLUDED.last_seen
"""

# A node's containers as its latest heartbeat lists them; rows of containers
# the node no longer reports are removed in the same transaction.
UPSERT_CONTAINER = """
INSERT INTO containers (container_id, app, function, version, node_id, state, inflight,
                        max_inputs, restored, started_at, idle_since, updated_at, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, to_timestamp($10),
        CASE WHEN $11 > 0 THEN to_timestamp($11) END, now(), $12)
ON CONFLICT (container_id) DO UPDATE SET
    state = EXCLUDED.state, inflight = EXCLUDED.inflight, idle_since = EXCLUDED.idle_since,
    restored = EXCLUDED.restored, updated_at = now(), error = EXCLUDED.error, node_id = EXCLUDED.node_id
"""
FORGET_CONTAINERS = "DELETE FROM containers WHERE node_id = $1 AND NOT (container_id = ANY($2::text[]))"
MARK_DEAD = "UPDATE nodes SET state = 'dead' WHERE id = ANY($1::text[]) AND state IS DISTINCT FROM 'dead'"
MARK_UP = "UPDATE nodes SET state = 'ready' WHERE id = $1 AND state IS DISTINCT FROM 'ready'"
DEPLOYED = "SELECT app, function, version, bundle_sha256, spec::text FROM deployed_functions"
READY_SNAPSHOTS = """
SELECT s.snapshot_id, s.app, s.function, s.version, s.fingerprint::text
FROM snapshots s
JOIN deployed_functions d ON d.app = s.app AND d.function = s.function AND d.version = s.version
WHERE s.state = 'ready'
"""

# How often the reconcile loop runs; an AppEvent wakes it early.
TICK_S = 0.25
# Deployed functions are re-read at least this often, also without events.
CATALOG_REFRESH_S = 2.0


class SchedulerService(Service):
    name = "scheduler"

    async def setup(self) -> None:
        self._node_decoder = decoder(NodeEvent)
        self._spec_decoder = msgspec.json.Decoder(FunctionSpec)
        self._fingerprint_decoder = msgspec.json.Decoder(Fingerprint)
        self._app_decoder = decoder(AppEvent)
        self.reconciler = Reconciler(self.bus)
        self._wake = asyncio.Event()
        self._catalog: list[DeployedFunction] = []
        self._catalog_at = 0.0
        await self.bus.ensure_consumer(
            NODES_STREAM,
            NODES_DURABLE,
            filter_subject=NODES_SUBJECT,
            ack_wait_s=30,
            max_deliver=20,
            max_ack_pending=1000,
        )

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.node_events, self.app_events, self.reconcile]

    async def app_events(self) -> None:
        """A deploy or stop re-reads the catalog at once, so the first call
        to a new function does not wait for the periodic refresh."""

        async def on_app_event(msg: Msg) -> None:
            if self._app_decoder.decode(msg.data):
                self._catalog_at = 0.0
                self._wake.set()

        sub = await self.bus.serve("thaw.event.app.*", on_app_event)
        try:
            await self.stopping.wait()
        finally:
            await sub.unsubscribe()

    async def reconcile(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.reconcile_once()
            except Exception:  # Postgres or NATS away: try again next tick
                log.exception("reconcile failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            except TimeoutError:
                pass

    async def reconcile_once(self) -> None:
        assert self.db is not None
        if time.monotonic() - self._catalog_at > CATALOG_REFRESH_S:
            rows = await self.db.fetch(DEPLOYED)
            self._catalog = [
                DeployedFunction(r["app"], r["version"], r["bundle_sha256"], self._spec_decoder.decode(r["spec"]))
                for r in rows
            ]
            self.reconciler.snapshots = await self.ready_snapshots()
            self._catalog_at = time.monotonic()
        dead = self.reconciler.dead_nodes()
        if dead:
            await self.db.execute(MARK_DEAD, dead)
            await self.db.execute("DELETE FROM containers WHERE node_id = ANY($1::text[])", dead)
        await self.reconciler.tick(self._catalog)

    async def node_events(self) -> None:
        await self.bus.consume(
            NODES_STREAM, NODES_DURABLE, self.on_node_event, batch=100, stop=self.stopping
        )

    async def on_node_event(self, msg: Msg) -> None:
        event = await self.decode(msg, self._node_decoder)
        match event:
            case None:
                return  # refused and terminated by decode()
            case NodeHeartbeat():
                await self.upsert_node(event)
            case _:
                await self.reject(
                    msg.subject, msg.data, "unknown", f"unhandled {type(event).__name__}"
                )
                await term(msg)

    async def ready_snapshots(self) -> dict[tuple[str, str, int], list[ReadySnapshot]]:
        assert self.db is not None
        out: dict[tuple[str, str, int], list[ReadySnapshot]] = {}
        for r in await self.db.fetch(READY_SNAPSHOTS):
            fp = self._fingerprint_decoder.decode(r["fingerprint"])
            out.setdefault((r["app"], r["function"], r["version"]), []).append(
                ReadySnapshot(r["snapshot_id"], fp)
            )
        return out

    async def upsert_node(self, hb: NodeHeartbeat) -> None:
        assert self.db is not None
        self.reconciler.observe(hb)
        if self.reconciler.nodes.get(hb.node_id) is not hb:
            return  # an older heartbeat delivered late
        await self.db.execute(UPSERT_NODE, hb.node_id, hb, hb.at)
        await self.db.execute(MARK_UP, hb.node_id)
        async with self.db.pool.acquire() as conn, conn.transaction():
            for c in hb.containers:
                await conn.execute(
                    UPSERT_CONTAINER, c.container_id, c.app, c.function, c.version, hb.node_id,
                    c.state, c.inflight, c.max_inputs, c.restored, c.started_at, c.idle_since, c.error,
                )
            await conn.execute(FORGET_CONTAINERS, hb.node_id, [c.container_id for c in hb.containers])
