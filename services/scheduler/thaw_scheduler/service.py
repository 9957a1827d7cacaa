"""The scheduler's lifecycle: keep ``nodes`` and ``containers`` current from
heartbeats, and run the reconcile loop (``reconcile.py``) that starts and
stops containers so each deployed function has what its load needs.

It consumes ``thaw.event.node.*`` (EVENTS stream) through the durable pull
consumer ``scheduler-nodes``, decodes each message with one decoder built at
start-up, dispatches on the decoded type with ``match``, and upserts
heartbeats into ``nodes``. A malformed message is refused through
``Service.reject`` (ErrorEvent on ``thaw.event.error.scheduler``) and
terminated, never redelivered; the loop carries on with the next one.
Placement and autoscaling policy live in ``placement.py`` and ``autoscale.py``,
the SQL in ``store.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec
from thaw_core import contract, secrets_grant
from thaw_core.bus import Msg
from thaw_core.schema import AppEvent, NodeHeartbeat, decoder
from thaw_core.service import Service, term

from thaw_scheduler import store
from thaw_scheduler.first_input import FirstInputs
from thaw_scheduler.reconcile import Reconciler
from thaw_scheduler.sandbox_placement import SandboxPlacer
from thaw_scheduler.unanswered import SWEEP_EVERY_S, Deployed, UnansweredInputs

log = logging.getLogger(__name__)

NODES_STREAM = contract.EVENTS_STREAM.name
NODES_DURABLE = "scheduler-nodes"
NODES_SUBJECT = contract.wildcard(contract.EVENT_NODE)

# Every message type the node subjects carry; a union once there are several.
NodeEvent = NodeHeartbeat

# How often the reconcile loop runs (one request to NATS, whatever the number
# of functions); an AppEvent or a cold function's first input wakes it early.
TICK_S = 0.25
# Deployed functions (and their ready snapshots) are re-read at least this
# often; a deploy or stop re-reads them at once (its AppEvent).
CATALOG_REFRESH_S = 10.0


class SchedulerService(Service):
    name = "scheduler"

    async def setup(self) -> None:
        self._node_decoder = decoder(NodeEvent)
        self._app_decoder = decoder(AppEvent)
        # Shared with the gateway, which answers only the secrets fetches it signs.
        grant_key = secrets_grant.load_key(self.settings.state_dir)
        self.reconciler = Reconciler(self.bus, grant_key=grant_key)
        self.sandboxes = SandboxPlacer(self.bus, self.reconciler)
        self.unanswered = UnansweredInputs(self.bus, self._deployed_now, self.reject)
        self._wake = asyncio.Event()
        self.first_inputs = FirstInputs(self.bus, self._wake)
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
        return [
            self.node_events,
            self.app_events,
            self.reconcile,
            self.answer_unconsumed,
            self.place_sandboxes,
        ]

    async def place_sandboxes(self) -> None:
        """Answer the gateway's ``PlaceSandbox`` requests (``sandbox_placement``)."""
        await self.serve_until_stopping(
            contract.SANDBOX_PLACE, self.sandboxes.on_request, queue="scheduler"
        )

    async def _deployed_now(self) -> Deployed:
        assert self.db is not None
        deployed = await store.deployed_now(self.db)
        # Nowhere to run for longer than the pending limit: its old inputs fail.
        since = time.time() - self.unanswered.pending_limit_s
        nowhere = {k: why for k, (why, t) in self.reconciler.nowhere.items() if t <= since}
        return msgspec.structs.replace(deployed, nowhere=nowhere)

    async def answer_unconsumed(self) -> None:
        """Answer the inputs no deployed function consumes (``unanswered``)."""
        while not self.stopping.is_set():
            try:
                r = self.reconciler
                await self.unanswered.sweep(r.stored, r.deployed_keys, list(r.nowhere))
            except Exception:  # Postgres or NATS away: try again next sweep
                log.exception("sweep of unanswered inputs failed")
            try:
                await asyncio.wait_for(self.stopping.wait(), SWEEP_EVERY_S)
            except TimeoutError:
                pass

    async def app_events(self) -> None:
        """A deploy or stop re-reads the catalog at once, so the first call
        to a new function does not wait for the periodic refresh."""

        async def on_app_event(msg: Msg) -> None:
            if self._app_decoder.decode(msg.data):
                self._catalog_at = 0.0
                self._wake.set()

        await self.serve_until_stopping(contract.wildcard(contract.EVENT_APP), on_app_event)

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
            self.reconciler.set_catalog(await store.deployed_functions(self.db))
            self.reconciler.snapshots = await store.ready_snapshots(self.db)
            self._catalog_at = time.monotonic()
            refreshed = True
        else:
            refreshed = False
        dead = self.reconciler.dead_nodes()
        if dead:
            await store.mark_dead(self.db, dead)
        await self.reconciler.tick()
        if refreshed:
            await self.reconciler.make_snapshots()  # after tick: it judged ``nowhere``
        await self.first_inputs.watch(self.reconciler.deployed_keys, self.reconciler.warm)

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

    async def upsert_node(self, hb: NodeHeartbeat) -> None:
        assert self.db is not None
        self.reconciler.observe(hb)
        if self.reconciler.nodes.get(hb.node_id) is not hb:
            return  # an older heartbeat delivered late
        await store.record_heartbeat(self.db, hb)
