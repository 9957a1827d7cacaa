"""The node agent's lifecycle: inventory, heartbeats and the node's containers.

``AgentService`` owns the node's state dir layout, the log shipper, the
container manager (``manager``), the input dispatcher (``dispatch``), the
command handler (``commands``) and the NATS subscriptions that feed them
(``thaw.agent.<node>`` and ``thaw.cancel.*``). Every ``HEARTBEAT_INTERVAL_S``,
and at once when a container changed (``listed_state``), it publishes a
``NodeHeartbeat`` (cores, memory, GPUs via NVML when there are any, the
containers it runs and the capacity their reservations leave) on
``thaw.event.node.<node>`` into the EVENTS stream. Agents never touch
Postgres: they talk only over NATS, and fetch code bundles from the blob store.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psutil
from thaw_core import contract, hosttools, metrics
from thaw_core.config import Settings
from thaw_core.gpu_inventory import gpu_inventory
from thaw_core.outbound_netns import url_addresses
from thaw_core.schema import NodeHeartbeat
from thaw_core.schema.sandboxes import StartSandbox
from thaw_core.service import Service

from thaw_agent import cgroup_weight, gpu_snapshot, reservations
from thaw_agent.commands import CommandHandler
from thaw_agent.dispatch import Dispatcher
from thaw_agent.dispatch_policy import DispatchTimings
from thaw_agent.exec_server import ExecServer
from thaw_agent.layout import NodeLayout
from thaw_agent.logship import LogShipper
from thaw_agent.manager import ContainerManager
from thaw_agent.payloads import Payloads
from thaw_agent.sandboxes import SandboxManager
from thaw_agent.snapshots import Snapshots

HEARTBEAT_INTERVAL_S = 2.0
# A container changed state (``listed_state``): the next heartbeat goes at
# once, but never sooner than this after the last one, so a node starting or
# stopping many containers sends a few a second rather than one each.
HEARTBEAT_MIN_GAP_S = 0.2
# On agent shutdown: how long running inputs get to finish before their
# containers are stopped and the inputs released for redelivery.
SHUTDOWN_GRACE_S = 3.0
# Snapshots being stored when the agent stops: how long they may still take.
SNAPSHOT_STORE_GRACE_S = 30.0
# How often the journal of held inputs forgets the settled ones.
HELD_INPUTS_COMPACT_S = 0.25
_SUBJECT_SAFE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


class AgentService(Service):
    name = "agent"
    uses_db = False  # agents talk only over NATS
    uses_blob = True  # code bundles

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
        dispatch_timings: DispatchTimings | None = None,
    ) -> None:
        super().__init__(settings)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.shutdown_grace_s = shutdown_grace_s
        self.dispatch_timings = dispatch_timings or DispatchTimings()

    async def setup(self) -> None:
        self.node_id = self.settings.node_id
        self.layout = NodeLayout(self.settings.state_dir, self.node_id)
        self.subject = contract.node_event_subject(self.layout.token)
        # The GPU set does not change while the agent runs; NVML init is slow-ish.
        self.gpus = await asyncio.to_thread(gpu_inventory)
        self.log.info(
            "node inventory",
            extra={
                "node_id": self.node_id,
                "cores": reservations.node_cores(),
                "gpus": len(self.gpus),
            },
        )
        # Before any container: all of them together weigh as the node's cores.
        await asyncio.to_thread(
            cgroup_weight.weigh_containers, self.layout, reservations.node_cores()
        )
        assert self.blob is not None
        self.shipper = LogShipper(self.bus)
        self.snapshots = Snapshots(self.bus, self.blob, self.layout.snapshots, self.node_id)
        # The platform's servers, by address: containers' networks refuse them.
        deny = await asyncio.to_thread(
            url_addresses, (self.settings.nats_url, self.settings.blob_url)
        )
        self.manager = ContainerManager(
            self.layout,
            self.blob,
            self.shipper,
            bus=self.bus,
            snapshots=self.snapshots,
            volume_commit_interval_s=self.settings.volume_commit_interval_s,
            volume_cache_bytes=self.settings.volume_cache_bytes,
            gpus=self.gpus,
            deny=deny,
        )
        payloads = Payloads(
            self.blob, self.settings.payload_inline_bytes, self.settings.payload_max_bytes
        )
        self.dispatcher = Dispatcher(
            self.bus, self.manager, self.reject, self.dispatch_timings, payloads
        )
        # Scraped from the metrics thread: list() copies the values in one step.
        containers = self.manager.containers
        metrics.count_containers_from(lambda: [c.state for c in list(containers.values())])
        self.sandboxes = SandboxManager(self.manager)
        self.execs = ExecServer(self.bus, self.manager, self.sandboxes)
        self.commands = CommandHandler(
            self.manager, self.reject, self.start_sandbox, self.sandboxes.stop
        )
        self._subs: list[Any] = []
        # Clean up after a previous life of this node, then take commands.
        await self.manager.recover()
        # What the removed containers ran goes back to the queue now, not
        # after its ack wait.
        await self.dispatcher.held.hand_back(self.bus)
        await asyncio.to_thread(self.snapshots.cache.sweep)
        self._subs.append(
            await self.bus.serve(contract.all_of(contract.CANCEL), self.dispatcher.on_cancel)
        )
        for subject in self.command_subjects:
            self._subs.append(await self.bus.serve(subject, self.commands.on_command))
        self.log.info(
            "containers ready to start",
            extra={"node_dir": str(self.layout.root), "subjects": self.command_subjects},
        )
        # Read once (CPU flags, tool versions; NVML): it does not change while we run.
        self.fingerprint = await self.snapshots.fingerprint()
        # Told to the gateway, which warns a deploy asking for GPU snapshots.
        self.no_gpu_snapshots = gpu_snapshot.unavailable(self.fingerprint.driver) or ""

    async def start_sandbox(self, command: StartSandbox) -> None:
        await self.sandboxes.start(command.spec, command.secrets_grant)
        await self.execs.open(command.spec.sandbox_id)

    @property
    def command_subjects(self) -> list[str]:
        """Where commands are served: the node's subject token, and the raw node
        id too when it differs but is a valid subject (a dotted hostname)."""
        subjects = [contract.agent_command_subject(self.layout.token)]
        raw = contract.agent_command_subject(self.node_id)
        if raw not in subjects and _SUBJECT_SAFE.match(self.node_id):
            subjects.append(raw)
        return subjects

    async def teardown(self) -> None:
        """Stop taking work, let running inputs finish for ``shutdown_grace_s``,
        stop every container (what is still running is released for redelivery)."""
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        grace_s = self.shutdown_grace_s
        await self.dispatcher.close()
        await self.commands.close(timeout_s=grace_s)
        await self.manager.stop_all(grace_s)
        await self.sandboxes.stop_all()
        await self.execs.shutdown()
        await self.snapshots.close(timeout_s=SNAPSHOT_STORE_GRACE_S)
        await self.dispatcher.drain(timeout_s=5.0)
        self.dispatcher.held.close()
        await self.shipper.flush()

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.heartbeat_loop, self.log_loop, self.held_inputs_loop]

    async def held_inputs_loop(self) -> None:
        """Keep the journal of held inputs short (``held_inputs``)."""
        while not self.stopping.is_set():
            self.dispatcher.held.compact()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), HELD_INPUTS_COMPACT_S)

    async def log_loop(self) -> None:
        await self.shipper.run(self.stopping)

    async def checks(self) -> dict[str, str]:
        if not hosttools.rootfs_ready():
            return {"containers": f"no container rootfs at {hosttools.default_rootfs()}"}
        if not hosttools.runc_path().exists():
            return {"containers": f"runc not found at {hosttools.runc_path()}"}
        return {"containers": "ok"}

    def heartbeat(self) -> NodeHeartbeat:
        cores = reservations.node_cores()
        memory_mb = int(psutil.virtual_memory().total) // (1024 * 1024)
        held = self.manager.reserved().plus(self.sandboxes.reserved())
        disk_mb, disk_free_mb = reservations.disk_mb(self.layout.containers)
        # Free means not reserved by our containers, as with Kubernetes
        # requests: the CPU load of the moment swings too fast to place on
        # (a busy 2-core node would look full between two heartbeats), and
        # an idle container keeps its reservation.
        return NodeHeartbeat(
            node_id=self.node_id,
            cores=cores,
            memory_mb=memory_mb,
            gpus=self.manager.gpus(),
            free_cores=round(max(0.0, cores - held.cores), 3),
            free_memory_mb=max(0, memory_mb - held.memory_mb),
            disk_mb=disk_mb,
            free_disk_mb=max(0, disk_free_mb - held.disk_mb),
            containers=[*self.manager.infos(), *self.sandboxes.infos()],
            fingerprint=self.fingerprint,
            cached_snapshots=self.snapshots.cache.ids(),
            no_gpu_snapshots=self.no_gpu_snapshots,
        )

    async def heartbeat_loop(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            sent_at = time.monotonic()
            self.manager.changed.clear()  # what changed before now is in this one
            try:
                await self.execs.sync()
                await asyncio.wait_for(
                    self.bus.publish(self.subject, self.heartbeat()),
                    timeout=max(1.0, self.heartbeat_interval_s),
                )
                if failures:
                    self.log.info("heartbeats flowing again", extra={"missed": failures})
                failures = 0
            except Exception as exc:  # noqa: BLE001 - NATS restarting: keep trying, say so once
                failures += 1
                if failures == 1:
                    self.log.warning("heartbeat not published", extra={"error": repr(exc)})
            await self._until_next_heartbeat(sent_at)

    async def _until_next_heartbeat(self, sent_at: float) -> None:
        """The interval, or less once a container changed (not under
        ``HEARTBEAT_MIN_GAP_S`` after ``sent_at``), or until stopping."""
        waits = [
            asyncio.ensure_future(self.stopping.wait()),
            asyncio.ensure_future(self.manager.changed.wait()),
        ]
        try:
            await asyncio.wait(
                waits, timeout=self.heartbeat_interval_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for w in waits:
                w.cancel()
        gap = HEARTBEAT_MIN_GAP_S - (time.monotonic() - sent_at)
        if gap > 0 and not self.stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), gap)
