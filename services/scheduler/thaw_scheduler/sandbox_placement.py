"""Sandboxes placed at the gateway's request (``contract.SANDBOX_PLACE``).

A ``PlaceSandbox`` is answered once a node's agent runs the sandbox: the
node is chosen as a function container's is (``placement.choose``, on the
nodes' latest heartbeats), less what sandboxes placed since those
heartbeats reserve; the agent is sent ``StartSandbox``. Requests are placed
one at a time, so two never count the same free capacity. On nodes full of
warm idle function containers, some of those are stopped to make room
(``reclaim.py``). No node with room even so is an answer that says so, never
a wait (with no node up at all, the first heartbeats are waited for a few
seconds: a stack that just started). That answer is given on heartbeats taken
after the request came: one taken before may show a container that has just
gone idle as busy, or one just stopped as still there.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import nats.errors
from thaw_core import contract, secrets_grant
from thaw_core.bus import Bus, BusRequestError, Msg
from thaw_core.schema import CommandReply, Resources, decoder, encode
from thaw_core.schema.sandboxes import PlaceSandbox, SandboxPlaced, SandboxSpec, StartSandbox

from thaw_scheduler.placement import NodeCapacity, choose
from thaw_scheduler.reconcile import Reconciler

log = logging.getLogger(__name__)

# How long the agent may take to start it (image layers, runc).
START_TIMEOUT_S = 60.0
# A placed sandbox counts against its node until a heartbeat shows it, or this long.
PENDING_S = 10.0
# With no node up (a stack just started, its agents' first heartbeats on the
# way), how long a request waits for one before it is told so.
NO_NODE_WAIT_S = 15.0
# Before "no room": how long to wait for every live node's heartbeat taken
# after the request (agents send one every 2 s, and soon after a change).
FRESH_VIEW_WAIT_S = 5.0
_NO_NODE_POLL_S = 0.1

_reply = msgspec.json.Decoder(CommandReply)


class SandboxPlacer:
    def __init__(self, bus: Bus, reconciler: Reconciler) -> None:
        self.bus = bus
        self.reconciler = reconciler
        self._decoder = decoder(PlaceSandbox)
        # sandbox id -> (node id, resources, placed at)
        self._pending: dict[str, tuple[str, Resources, float]] = {}

    async def on_request(self, msg: Msg) -> None:
        try:
            request = self._decoder.decode(msg.data)
            answer = await self.place(request)
        except msgspec.DecodeError as e:
            answer = SandboxPlaced(error=f"invalid sandbox request: {e}")
        if msg.reply:
            await msg.respond(encode(answer))

    def _capacity(self) -> list[NodeCapacity]:
        now = time.monotonic()
        live = self.reconciler.live_nodes()
        seen = {c.container_id for hb in live for c in hb.containers}
        capacity = {hb.node_id: NodeCapacity.from_heartbeat(hb) for hb in live}
        for sid, (node, resources, at) in list(self._pending.items()):
            if sid in seen or now - at > PENDING_S:
                del self._pending[sid]
            elif node in capacity:
                capacity[node] = capacity[node].reserve(resources)
        return list(capacity.values())

    async def _view_since(self, asked_at: float) -> None:
        """Until every live node's latest heartbeat was taken at or after
        ``asked_at`` (``FRESH_VIEW_WAIT_S`` at most)."""
        deadline = time.monotonic() + FRESH_VIEW_WAIT_S
        while time.monotonic() < deadline and any(
            hb.at < asked_at for hb in self.reconciler.live_nodes()
        ):
            await asyncio.sleep(_NO_NODE_POLL_S)

    async def _room(self, spec: SandboxSpec, nodes: list[NodeCapacity]) -> NodeCapacity | None:
        """A node with room for ``spec``, idle containers stopped for it if need be."""
        node = choose(nodes, spec.resources)
        if node is None and nodes:
            capacity = {n.node_id: n for n in nodes}
            wanted_by = f"sandbox {spec.sandbox_id}"
            node = await self.reconciler.reclaim(capacity, spec.resources, wanted_by)
        return node

    async def place(self, request: PlaceSandbox) -> SandboxPlaced:
        spec = request.spec
        r = spec.resources
        asked_at = self.reconciler.clock()
        nodes = self._capacity()
        deadline = time.monotonic() + NO_NODE_WAIT_S
        while not nodes and time.monotonic() < deadline:
            await asyncio.sleep(_NO_NODE_POLL_S)
            nodes = self._capacity()
        try:
            node = await self._room(spec, nodes)
            if node is None and nodes:
                await self._view_since(asked_at)
                nodes = self._capacity()
                node = await self._room(spec, nodes)
        except ValueError as e:  # a GPU request naming no GPU there is
            return SandboxPlaced(error=str(e))
        if node is None:
            what = f"cpu={r.cpu:g}, memory={r.memory_mb} MB" + (f", gpu={r.gpu}" if r.gpu else "")
            if not nodes:
                return SandboxPlaced(
                    error=f"no node is up to run the sandbox (waited {NO_NODE_WAIT_S:g}s for one)",
                    no_room=True,
                )
            return SandboxPlaced(
                error=f"no node has room for a sandbox asking {what} (of {len(nodes)} node(s) up)",
                no_room=True,
            )
        self._pending[spec.sandbox_id] = (node.node_id, r, time.monotonic())
        subject = contract.agent_command_subject(node.node_id)
        grant = secrets_grant.issue(
            self.reconciler.grant_key,
            node_id=node.node_id,
            app=spec.app,
            function=contract.SANDBOX_SPEC_NAME,
            container_id=spec.sandbox_id,
            secrets=spec.secrets,
        )
        start = StartSandbox(spec=spec, secrets_grant=grant)
        try:
            msg = await self.bus.request(subject, start, timeout_s=START_TIMEOUT_S)
            reply = _reply.decode(msg.data)
        except (nats.errors.Error, BusRequestError, TimeoutError, msgspec.DecodeError) as e:
            self._pending.pop(spec.sandbox_id, None)
            return SandboxPlaced(error=f"the agent of node {node.node_id} did not start it: {e}")
        if not reply.ok:
            self._pending.pop(spec.sandbox_id, None)
            return SandboxPlaced(error=reply.error)
        log.info("sandbox placed", extra={"sandbox_id": spec.sandbox_id, "node_id": node.node_id})
        return SandboxPlaced(node_id=node.node_id)
