"""The scheduler's control loop: observe, plan, act.

Observed state is rebuilt every tick from what is authoritative elsewhere —
node heartbeats (which containers run where, and their load) and INVOKE's
per-subject counts (how many inputs wait or run: INVOKE is a work queue, so
an input is stored until it is acked) — so a restarted scheduler needs no
state of its own. What it adds is memory of the starts it has asked for and
not yet seen in a heartbeat, so that one backlog is not answered with a
container per tick.

A tick costs one request to NATS whatever the number of deployed functions
(the counts of every INVOKE subject at once; subjects with nothing stored are
not listed), and plans only the functions that have inputs, containers or a
``min_containers``: an idle deployed function costs nothing per tick.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec
import nats.errors
from thaw_core import contract, metrics, schema, secrets_grant
from thaw_core.bus import Bus, BusRequestError
from thaw_core.fleet_fit import NodeOffer, why_nowhere
from thaw_core.schema import ContainerInfo, FunctionSpec, NodeHeartbeat

from thaw_scheduler.autoscale import LIVE_STATES, Load, plan
from thaw_scheduler.deploy_snapshots import DeploySnapshots
from thaw_scheduler.placement import NodeCapacity, choose
from thaw_scheduler.reclaim import Idle, make_room
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
    # ``thaw run``'s apps: no snapshots at deploy (they live for one run).
    ephemeral: bool = False

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
    # Stops an agent took and no heartbeat has confirmed yet: container id ->
    # (node, when). Such a container is gone for planning, so an input right
    # after a scale-down starts a container at once instead of counting on
    # one that is stopping, and the stop is not asked again every tick.
    _stops: dict[str, tuple[str, float]] = field(default_factory=dict)
    _unplaced: dict[tuple[str, str], schema.Resources] = field(default_factory=dict)
    # Functions no live node could ever run: (why, since when).
    nowhere: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    # What ``nowhere`` was judged on: the catalog (by identity) and the nodes' offers.
    _judged_on: tuple[object, frozenset[NodeOffer]] | None = None
    # What is deployed (``set_catalog``), and which of it keeps containers at idle.
    deployed: dict[tuple[str, str], DeployedFunction] = field(default_factory=dict)
    deployed_keys: frozenset[tuple[str, str]] = frozenset()
    _floors: frozenset[tuple[str, str]] = frozenset()
    # Functions with a container live or asked for, as the last tick saw them.
    warm: frozenset[tuple[str, str]] = frozenset()
    # Inputs stored per (app, function), as the last tick read them.
    stored: dict[tuple[str, str], int] = field(default_factory=dict)
    # Functions whose load gauges were last set non-zero (zeroed once when idle).
    _gauged: set[tuple[str, str]] = field(default_factory=set)
    deploy_snapshots: DeploySnapshots = field(default_factory=DeploySnapshots)
    # Signs each start's leave to fetch its secrets (thaw_core.secrets_grant);
    # the service gives it the key it shares with the gateway. Without it, a
    # key of its own, whose grants the gateway refuses by name.
    grant_key: bytes = field(default_factory=lambda: os.urandom(secrets_grant.KEY_BYTES))

    def set_catalog(self, functions: Iterable[DeployedFunction]) -> None:
        self.deployed = {f.key: f for f in functions}
        self.deployed_keys = frozenset(self.deployed)
        self._floors = frozenset(
            k for k, f in self.deployed.items() if f.spec.autoscale.min_containers > 0
        )

    def observe(self, hb: NodeHeartbeat) -> None:
        known = self.nodes.get(hb.node_id)
        if known is not None and known.at > hb.at:
            return  # redelivered or late: the newer view stands
        self.nodes[hb.node_id] = hb
        for c in hb.containers:
            self._starts.pop(c.container_id, None)
            if c.state == "failed":
                self._failed_at[(c.app, c.function)] = self.clock()
        listed = {c.container_id for c in hb.containers}
        for cid, (node_id, _) in list(self._stops.items()):
            if node_id == hb.node_id and cid not in listed:
                del self._stops[cid]  # stopped, as the node now says

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
        for cid, (_, at) in list(self._stops.items()):
            if now - at > START_GRACE_S:
                del self._stops[cid]  # still listed long after: counted (and stopped) again
        for hb in live:
            for c in hb.containers:
                if c.function == contract.SANDBOX_FUNCTION:
                    continue  # placed on request (sandbox_placement), not reconciled
                if c.snapshot_only:
                    continue  # takes no inputs and stops itself (deploy_snapshots)
                if c.container_id in self._stops:
                    continue  # stopping
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

    async def read_stored(self) -> dict[tuple[str, str], int]:
        """Inputs stored per function, in one request for all of INVOKE; the
        last counts when NATS does not answer (a tick then plans on those)."""
        try:
            counts = await self.bus.stored_subjects(contract.all_of(contract.INVOKE))
        except (nats.errors.Error, TimeoutError) as e:  # NATS away
            log.debug("no INVOKE subject counts: %s", e)
            return self.stored
        stored: dict[tuple[str, str], int] = {}
        for subject, n in counts.items():
            key = contract.invoke_key_of_subject(subject)
            if key is not None and n > 0:
                stored[key] = n
        self.stored = stored
        return stored

    def load(self, key: tuple[str, str], current: list[ContainerInfo]) -> Load:
        """What waits and what runs: the inputs stored (delivered or not), of
        which the containers' heartbeats say how many they are running."""
        stored = self.stored.get(key, 0)
        running = min(stored, sum(c.inflight for c in current))
        load = Load(pending=stored - running, running=running)
        if load.demand or key in self._gauged:
            metrics.PENDING_INPUTS.labels(*key).set(load.pending)
            metrics.RUNNING_INPUTS.labels(*key).set(load.running)
            if load.demand:
                self._gauged.add(key)
            else:
                self._gauged.discard(key)
        return load

    async def tick(self) -> None:
        now = self.clock()
        deployed = self.deployed
        running = self.containers()
        self.warm = frozenset(
            k for k, placed in running.items() if any(c.state in LIVE_STATES for _, c in placed)
        )
        await self.read_stored()
        capacity = {hb.node_id: NodeCapacity.from_heartbeat(hb) for hb in self.live_nodes()}
        self._judge_nowhere(now)

        # Containers of apps no longer deployed, or of an older version, go.
        for key, placed in running.items():
            f = deployed.get(key)
            for node_id, c in placed:
                stale = f is None or c.version != f.version
                if stale and c.state in ("starting", "ready") and (f is None or c.inflight == 0):
                    await self._stop(node_id, c.container_id, "function redeployed or stopped")

        # Only what has inputs, containers or a floor can need a change.
        active = set(self.stored) | set(running) | self._floors
        for key in active:
            f = deployed.get(key)
            if f is None:
                continue  # not deployed: answered by ``unanswered``, stopped above
            current = [(n, c) for n, c in running.get(key, []) if c.version == f.version]
            infos = [c for _, c in current]
            p = plan(f.spec.autoscale, self.load(key, infos), f.spec.max_inputs, infos, now)
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
            if key in self.nowhere:
                starts = 0  # no node could: its inputs wait (then fail: unanswered.py)
            for _ in range(starts):
                node = choose(list(capacity.values()), f.spec.resources, prefer)
                if node is None:
                    node = await self.reclaim(capacity, f.spec.resources, f"{f.app}/{f.spec.name}")
                if node is None:
                    # Once per function and request, not once per tick.
                    if self._unplaced.get(key) != f.spec.resources:
                        self._unplaced[key] = f.spec.resources
                        log.warning(
                            "no node has room for %s/%s (%s)", f.app, f.spec.name, f.spec.resources
                        )
                    break
                self._unplaced.pop(key, None)
                capacity[node.node_id] = node.reserve(f.spec.resources)
                await self._start(node.node_id, f, now)

    def idle(self) -> list[Idle]:
        """Containers that may be stopped to make room (``reclaim.py``)."""
        given: dict[tuple[str, str], list[str]] = defaultdict(list)
        for hb in self.live_nodes():
            for g in hb.gpus:
                if g.container_id:
                    given[(hb.node_id, g.container_id)].append(g.name)
        out: list[Idle] = []
        for key, placed in self.containers().items():
            f = self.deployed.get(key)
            if f is None or self.stored.get(key, 0):
                continue  # not ours to judge (stopped above), or has work
            live = sum(1 for _, c in placed if c.state in LIVE_STATES)
            spare = live - f.spec.autoscale.min_containers
            idle = sorted(
                (
                    (node_id, c)
                    for node_id, c in placed
                    if c.state == "ready" and c.inflight == 0 and c.idle_since > 0
                    and c.version == f.version
                ),
                key=lambda nc: nc[1].idle_since,
            )
            for node_id, c in idle[: max(0, spare)]:
                gpus = tuple(given.get((node_id, c.container_id), ()))
                out.append(Idle(node_id, c, f.spec.resources, gpus))
        return out

    async def reclaim(
        self, capacity: dict[str, NodeCapacity], r: schema.Resources, wanted_by: str
    ) -> NodeCapacity | None:
        """Stop idle containers so that ``r`` fits on a node; that node's
        capacity (also written into ``capacity``), or None when no node can
        be freed enough or an agent did not take a stop."""
        room = make_room(capacity, self.idle(), r)
        if room is None:
            return None
        node, victims = room
        for v in victims:
            c = v.container
            log.info(
                "stopping an idle container to make room",
                extra={"container_id": c.container_id, "function": f"{c.app}/{c.function}",
                       "node_id": v.node_id, "for": wanted_by},
            )
            if not await self._stop(v.node_id, c.container_id, f"made room for {wanted_by}"):
                return None
        capacity[node.node_id] = node
        return node

    def _judge_nowhere(self, now: float) -> None:
        """Which functions no live node could ever run; logged once per change.
        Judged again only when the catalog or the nodes change, so an idle
        tick does not cost more with more functions."""
        offers = frozenset(NodeOffer.from_heartbeat(hb) for hb in self.live_nodes())
        if self._judged_on is not None:
            catalog, judged_offers = self._judged_on
            if catalog is self.deployed and judged_offers == offers:
                return
        self._judged_on = (self.deployed, offers)
        listed = sorted(offers, key=lambda o: o.node_id)
        judged: dict[tuple[str, str], tuple[str, float]] = {}
        for f in self.deployed.values():
            why = why_nowhere(f.spec.resources, listed)
            if why is None:
                continue
            was = self.nowhere.get(f.key)
            if was is None or was[0] != why:
                log.warning("%s/%s cannot run anywhere: %s", f.app, f.spec.name, why)
            judged[f.key] = (why, was[1] if was is not None else now)
        for key in self.nowhere.keys() - judged.keys():
            log.info("%s/%s can run on a node again", *key)
        self.nowhere = judged

    async def make_snapshots(self) -> None:
        """Ask for the snapshots deployed functions lack (``deploy_snapshots``);
        run when the catalog is re-read, not every tick."""
        wanted = {
            (f.app, f.spec.name, f.version): f
            for f in self.deployed.values()
            if f.spec.enable_memory_snapshot and not f.ephemeral and f.key not in self.nowhere
        }
        resources = ((k, f.spec.resources) for k, f in wanted.items())
        for ask in self.deploy_snapshots.asks(resources, self.snapshots, self.live_nodes()):
            f = wanted[ask.key]
            log.info(
                "asking %s for a snapshot of %s/%s version %d (class %s)",
                ask.node_id, f.app, f.spec.name, f.version, ask.fingerprint_class[:12],
            )  # fmt: skip
            cmd = self._start_command(ask.node_id, f, snapshot_only=True)
            await self._command(ask.node_id, cmd)

    async def _start(self, node_id: str, f: DeployedFunction, now: float) -> None:
        cmd = self._start_command(node_id, f)
        cid = cmd.container_id
        info = ContainerInfo(
            container_id=cid,
            app=f.app,
            function=f.spec.name,
            version=f.version,
            state="starting",
            max_inputs=f.spec.max_inputs,
            started_at=now,
        )
        self._starts[cid] = _Start(node_id, info)
        if not await self._command(node_id, cmd):
            self._starts.pop(cid, None)
            self._failed_at[f.key] = now

    async def _stop(self, node_id: str, cid: str, reason: str) -> bool:
        if await self._command(node_id, schema.StopContainer(container_id=cid, reason=reason)):
            self._stops[cid] = (node_id, self.clock())
            return True
        return False

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


    def _start_command(
        self, node_id: str, f: DeployedFunction, *, snapshot_only: bool = False
    ) -> schema.StartContainer:
        cid = f"ct-{uuid.uuid4().hex[:12]}"
        grant = secrets_grant.issue(
            self.grant_key,
            node_id=node_id,
            app=f.app,
            function=f.spec.name,
            container_id=cid,
            secrets=f.spec.secrets,
            version=f.version,
        )
        return schema.StartContainer(
            container_id=cid,
            app=f.app,
            version=f.version,
            bundle_sha256=f.bundle_sha256,
            spec=f.spec,
            snapshot_only=snapshot_only,
            secrets_grant=grant,
        )
