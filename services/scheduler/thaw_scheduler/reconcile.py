"""The scheduler's control loop: observe, plan, act.

Observed state is rebuilt every tick from what is authoritative elsewhere —
node heartbeats (which containers run where, and their load) and each
function's durable consumer on INVOKE (how many inputs wait or run) — so a
restarted scheduler needs no state of its own. What it adds is memory of the
starts it has asked for and not yet seen in a heartbeat, so that one backlog
is not answered with a container per tick.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
import nats.errors
from thaw_core import contract, metrics, schema
from thaw_core.bus import Bus, BusRequestError
from thaw_core.schema import ContainerInfo, FunctionSpec, NodeHeartbeat

from thaw_scheduler.autoscale import Load, plan
from thaw_scheduler.placement import NodeCapacity, choose
from thaw_scheduler.snapshot_affinity import ReadySnapshot, preference

log = logging.getLogger(__name__)

# A node that has not heartbeated for this long is gone: its containers are
# replaced elsewhere and its unacked inputs come back after their ack wait.
NODE_TIMEOUT_S = 6.0
# A start the agent accepted but no heartbeat shows yet counts as "starting"
# for this long; after that the container is presumed lost.
START_GRACE_S = 30.0
# After a container of a function fails, wait before starting another, so a
# function whose import raises does not spin containers in a loop.
FAILURE_BACKOFF_S = 5.0

_reply = schema.decoder(schema.CommandReply)


@dataclass(frozen=True)
class DeployedFunction:
    app: str
    version: int
    bundle_sha256: str
    spec: FunctionSpec

    @property
    def key(self) -> tuple[str, str]:
        return (self.app, self.spec.name)


@dataclass
class _Start:
    node_id: str
    info: ContainerInfo


@dataclass
class Reconciler:
    bus: Bus
    clock: Callable[[], float] = time.time
    nodes: dict[str, NodeHeartbeat] = field(default_factory=dict)
    # Ready snapshots per (app, function, version), refreshed with the catalog.
    snapshots: dict[tuple[str, str, int], list[ReadySnapshot]] = field(default_factory=dict)
    _starts: dict[str, _Start] = field(default_factory=dict)
    _failed_at: dict[tuple[str, str], float] = field(default_factory=dict)
    _unplaced: dict[tuple[str, str], schema.Resources] = field(default_factory=dict)

    def observe(self, hb: NodeHeartbeat) -> None:
        known = self.nodes.get(hb.node_id)
        if known is not None and known.at > hb.at:
            return  # redelivered or late: the newer view stands
        self.nodes[hb.node_id] = hb
        for c in hb.containers:
            self._starts.pop(c.container_id, None)
            if c.state == "failed":
                self._failed_at[(c.app, c.function)] = self.clock()

    def live_nodes(self) -> list[NodeHeartbeat]:
        now = self.clock()
        return [hb for hb in self.nodes.values() if now - hb.at < NODE_TIMEOUT_S]

    def dead_nodes(self) -> list[str]:
        now = self.clock()
        return [n for n, hb in self.nodes.items() if now - hb.at >= NODE_TIMEOUT_S]

    def containers(self) -> dict[tuple[str, str], list[tuple[str, ContainerInfo]]]:
        """(app, function) -> [(node_id, container)], live nodes and pending starts."""
        now = self.clock()
        out: dict[tuple[str, str], list[tuple[str, ContainerInfo]]] = defaultdict(list)
        live = self.live_nodes()
        for hb in live:
            for c in hb.containers:
                out[(c.app, c.function)].append((hb.node_id, c))
        # A start asked of a node that went silent is not counted either: its
        # function gets a container elsewhere now, not after START_GRACE_S.
        live_ids = {hb.node_id for hb in live}
        for cid, s in list(self._starts.items()):
            if now - s.info.started_at > START_GRACE_S or s.node_id not in live_ids:
                del self._starts[cid]
                continue
            out[(s.info.app, s.info.function)].append((s.node_id, s.info))
        return out

    async def load(self, f: DeployedFunction) -> Load:
        consumer = contract.invoke_consumer(*f.key)
        try:
            state = await self.bus.consumer_state(consumer)
        except (nats.errors.Error, TimeoutError) as e:  # NATS away
            log.debug("no consumer info for %s: %s", f.key, e)
            return Load(0, 0)
        if state is None:  # not provisioned yet
            return Load(0, 0)
        load = Load(pending=state.pending, running=state.ack_pending)
        metrics.PENDING_INPUTS.labels(*f.key).set(load.pending)
        metrics.RUNNING_INPUTS.labels(*f.key).set(load.running)
        return load

    async def tick(self, functions: Iterable[DeployedFunction]) -> None:
        now = self.clock()
        deployed = {f.key: f for f in functions}
        running = self.containers()
        capacity = {hb.node_id: NodeCapacity.from_heartbeat(hb) for hb in self.live_nodes()}

        # Containers of apps no longer deployed, or of an older version, go.
        for key, placed in running.items():
            f = deployed.get(key)
            for node_id, c in placed:
                stale = f is None or c.version != f.version
                if stale and c.state in ("starting", "ready") and (f is None or c.inflight == 0):
                    await self._stop(node_id, c.container_id, "function redeployed or stopped")

        for key, f in deployed.items():
            current = [(n, c) for n, c in running.get(key, []) if c.version == f.version]
            p = plan(
                f.spec.autoscale,
                await self.load(f),
                f.spec.max_inputs,
                [c for _, c in current],
                now,
            )
            where = {c.container_id: n for n, c in current}
            for cid in p.stop:
                await self._stop(where[cid], cid, "scaled down")
            starts = p.start
            if starts and now - self._failed_at.get(key, 0.0) < FAILURE_BACKOFF_S:
                # Backing off: one probe container at most, none beside live ones.
                starts = 0 if current else 1
            prefer = None
            if f.spec.enable_memory_snapshot:
                snaps = self.snapshots.get((f.app, f.spec.name, f.version), [])
                prefer = preference(snaps, self.nodes)
            for _ in range(starts):
                node = choose(list(capacity.values()), f.spec.resources, prefer)
                if node is None:
                    # Once per function and request, not once per tick.
                    if self._unplaced.get(key) != f.spec.resources:
                        self._unplaced[key] = f.spec.resources
                        log.warning("no node has room for %s/%s (%s)", f.app, f.spec.name, f.spec.resources)
                    break
                self._unplaced.pop(key, None)
                capacity[node.node_id] = node.reserve(f.spec.resources)
                await self._start(node.node_id, f, now)

    async def _start(self, node_id: str, f: DeployedFunction, now: float) -> None:
        cid = f"ct-{uuid.uuid4().hex[:12]}"
        cmd = schema.StartContainer(
            container_id=cid, app=f.app, version=f.version, bundle_sha256=f.bundle_sha256, spec=f.spec
        )
        info = ContainerInfo(
            container_id=cid, app=f.app, function=f.spec.name, version=f.version,
            state="starting", max_inputs=f.spec.max_inputs, started_at=now,
        )
        self._starts[cid] = _Start(node_id, info)
        if not await self._command(node_id, cmd):
            self._starts.pop(cid, None)
            self._failed_at[f.key] = now

    async def _stop(self, node_id: str, cid: str, reason: str) -> None:
        await self._command(node_id, schema.StopContainer(container_id=cid, reason=reason))

    async def _command(self, node_id: str, cmd: schema.Message) -> bool:
        try:
            msg = await self.bus.request(contract.agent_command_subject(node_id), cmd, timeout_s=30)
            reply = _reply.decode(msg.data)
        except (nats.errors.Error, BusRequestError, TimeoutError, msgspec.DecodeError) as e:
            log.warning("agent %s did not take %s: %s", node_id, type(cmd).__name__, e)
            return False
        if not reply.ok:
            log.warning("agent %s refused %s: %s", node_id, type(cmd).__name__, reply.error)
        return reply.ok
