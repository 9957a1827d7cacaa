"""This node's containers: the registry, start planning, restore with fallback.

A start asks the snapshots service what to do (``Snapshots.plan``): restore a
snapshot (``Restore``: waited for until Ready; any failure removes it and a
cold container starts), or start cold and checkpoint once the runtime says
``SnapshotReady`` (``Checkpoint``), or plainly start cold. Failed containers
stay listed for ``FAILED_TTL_S`` so that the scheduler's heartbeats show why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from thaw_core import hosttools, layers, metrics
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.contract import CONTAINER_ENV_NAMES
from thaw_core.schema import (
    ContainerInfo,
    GpuInfo,
    RestoreFailure,
    SnapshotRestored,
    StartContainer,
    check_name,
)
from thaw_core.tasks import Background
from thaw_core.volumes import VolumesClient

from thaw_agent import gpu_devices, oci, userns
from thaw_agent.bundles import BundleCache
from thaw_agent.container import Container
from thaw_agent.container_events import ContainerEvents, ContainerStartError
from thaw_agent.container_volumes import NodeVolumes, commit_left_over
from thaw_agent.images import NodeImages
from thaw_agent.layout import NodeLayout
from thaw_agent.logship import LogShipper
from thaw_agent.reservations import Reserved, reserved
from thaw_agent.runc import Runc
from thaw_agent.runtime_dir import own_runtime_dir
from thaw_agent.secrets import fetch_secrets
from thaw_agent.snapshots import (
    CacheCorrupted,
    Checkpoint,
    Plan,
    Restore,
    SnapshotCorrupted,
    Snapshots,
)
from thaw_agent.store_relay import StoreRelay
from thaw_agent.volume_cache import DEFAULT_LIMIT_BYTES, ChunkCache

log = logging.getLogger("thaw.agent.containers")

FAILED_TTL_S = 60.0
# A restored container that is not Ready by then is given up for a cold one
# (the scheduler's StartContainer request waits 30 s for the whole start).
RESTORE_READY_TIMEOUT_S = 20.0
# A "snapshot then stop" container is stopped by then even if it never got
# to its snapshot (a stuck import must not hold the node's resources).
SNAPSHOT_ONLY_TIMEOUT_S = 900.0


class ContainerManager:
    """This node's containers, by id."""

    def __init__(
        self,
        layout: NodeLayout,
        blob: BlobStore,
        shipper: LogShipper,
        *,
        base_rootfs: Path | None = None,
        snapshots: Snapshots | None = None,
        bus: Bus | None = None,
        volume_commit_interval_s: float = 5.0,
        volume_cache_bytes: int = DEFAULT_LIMIT_BYTES,
        gpus: Sequence[GpuInfo] = (),
        deny: Sequence[str] = (),
    ) -> None:
        """``deny``: the platform's servers' addresses, which containers'
        networks must not reach (the node's own are refused anyway)."""
        self.layout = layout
        self.deny = deny
        self.gpu_inventory = tuple(gpus)  # the node's GPUs (NVML)
        self.shipper = shipper
        self.bus = bus
        self.blob = blob
        self.base_rootfs = base_rootfs or hosttools.default_rootfs()
        self.images = NodeImages(bus, blob, layout.root / "layers", self.base_rootfs)
        self.runc = Runc(layout.runc_root)
        # None: this node never snapshots (every start is cold).
        self.snapshots = snapshots
        self.bundles = BundleCache(blob, layout.bundles)
        # None without a bus: a function that mounts a volume cannot start here.
        self.volumes = (
            NodeVolumes(
                VolumesClient(bus, blob),
                ChunkCache(layout.volume_chunks, blob, volume_cache_bytes),
                volume_commit_interval_s,
            )
            if bus is not None
            else None
        )
        # Containers' Dict/Queue operations, relayed to the gateway.
        self.stores = StoreRelay(bus, blob)
        self.containers: dict[str, Container] = {}
        # Set when what the heartbeat lists changed (``listed_state``): a
        # container came, went or changed state.
        self.changed = asyncio.Event()
        self._starting: dict[str, asyncio.Future[Container]] = {}
        self._events: ContainerEvents | None = None
        self._runtime_packages: Path | None = None
        self._runtime_lock = asyncio.Lock()
        # Waits for "snapshot then stop" containers to take their snapshot.
        self._snapshot_only = Background(log)

    @property
    def events(self) -> ContainerEvents:
        if self._events is None:
            raise RuntimeError("ContainerManager.events is not set")
        return self._events

    @events.setter
    def events(self, events: ContainerEvents) -> None:
        self._events = events

    # ------------------------------------------------------------ views

    async def container_env(self, c: Container, *, with_secrets: bool = True) -> dict[str, str]:
        """The environment ``c``'s runtime applies before it loads the bundle,
        sent over its socket (``Configure``) on every connection, cold start
        or restore: config.json's, which holds everything that may be
        written on the host, and the values of its secrets as they are now,
        fetched from the gateway each time (they never touch config.json).
        Secrets cannot replace the names the runtime relies on."""
        env = dict(c.config_env)
        if with_secrets:
            fetched = await fetch_secrets(self.bus, c.app, c.spec, c.command.secrets_grant)
            env.update((k, v) for k, v in fetched.items() if k not in CONTAINER_ENV_NAMES)
        return env

    def get(self, container_id: str) -> Container | None:
        return self.containers.get(container_id)

    def ready(self, key: tuple[str, str]) -> list[Container]:
        """The containers that take ``key``'s inputs (never a snapshot-only one)."""
        return [
            c
            for c in self.containers.values()
            if c.state == "ready" and c.key == key and not c.command.snapshot_only
        ]

    def infos(self) -> list[ContainerInfo]:
        self._prune()
        return [c.info() for c in self.containers.values()]

    def _live(self) -> list[Container]:
        return [c for c in self.containers.values() if c.state in ("starting", "ready", "draining")]

    def gpus(self) -> list[GpuInfo]:
        """The node's GPUs, each naming the live container it is given to."""
        holder = {g.index: c.id for c in self._live() for g in c.gpus}
        return [
            msgspec.structs.replace(g, container_id=holder.get(g.index, ""))
            for g in self.gpu_inventory
        ]

    def reserved(self) -> Reserved:
        """What the node's live containers hold (``reservations``)."""
        return reserved((c.spec.resources, c.paths) for c in self._live())

    def _prune(self) -> None:
        now = time.time()
        for cid, c in list(self.containers.items()):
            if c.state == "failed" and now - c.ended_at > FAILED_TTL_S:
                del self.containers[cid]

    # ------------------------------------------------------------ lifecycle

    async def runtime_packages(self) -> Path:
        """The runtime's packages for this agent's Python (``runtime_dir``),
        laid out once: what a container on that Python mounts of them."""
        async with self._runtime_lock:
            if self._runtime_packages is None:
                found = await asyncio.to_thread(own_runtime_dir, hosttools.runtime_dir_root())
                await asyncio.to_thread(userns.make_traversable, found, userns.id_range())
                oci.runtime_for("", found)  # refuses a thaw that would bring its environment
                self._runtime_packages = found
            return self._runtime_packages

    async def recover(self) -> None:
        """Remove what a previous life of this node's agent left: runc
        containers under our --root, overlay mounts, container dirs. Lays
        out the runtime's packages, so that no first start waits for that."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        userns.make_traversable(self.layout.root, userns.id_range())
        await self.runtime_packages()
        for entry in await self.runc.list():
            cid = entry.get("id", "")
            log.warning("removing a stale container", extra={"container_id": cid})
            with contextlib.suppress(Exception):
                await self.runc.kill(cid, "KILL")
            await self.runc.delete(cid)
        # Their processes are gone: what they wrote to volumes is committed.
        await commit_left_over(self.volumes, self.layout.containers)
        if self.layout.containers.exists():
            await asyncio.to_thread(layers.remove_tree, self.layout.containers)
        await asyncio.to_thread(self.bundles.sweep)

    async def start(self, command: StartContainer) -> Container:
        """Start a container; idempotent for a container id that runs or starts."""
        cid = command.container_id
        check_name("container", cid)
        check_name("app", command.app)
        check_name("function", command.spec.name)
        if not hosttools.rootfs_ready(self.base_rootfs):
            raise ContainerStartError(
                f"no container rootfs at {self.base_rootfs}: run `make setup` on this node"
            )
        pending = self._starting.get(cid)
        if pending is not None:
            return await asyncio.shield(pending)
        existing = self.containers.get(cid)
        if existing is not None and existing.state in ("ready", "starting", "draining"):
            if existing.command != command:
                raise ContainerStartError(
                    f"container {cid} already runs {existing.app}.{existing.function}"
                    f" (version {existing.command.version}); container ids must be unique"
                )
            return existing  # a repeated command (the scheduler retrying): already done
        fut = asyncio.ensure_future(self._start(command))
        self._starting[cid] = fut
        fut.add_done_callback(lambda _: self._starting.pop(cid, None))
        return await asyncio.shield(fut)

    async def _start(self, command: StartContainer) -> Container:
        cid = command.container_id
        old = self.containers.get(cid)
        if old is not None:
            await old.stop(0)  # a failed or stopped one: make sure it is gone
        c = self._new_container(command)
        requested = time.monotonic()
        try:
            c.gpus = self._allocate_gpus(c)
            bundle_dir = await self.bundles.ensure(command.bundle_sha256)
        except Exception as e:
            c.state, c.error, c.ended_at = "failed", str(e), time.time()
            raise ContainerStartError(str(e)) from e
        with c.phases.timed("lookup"):
            plan = await self.snapshots.plan(command) if self.snapshots is not None else None
        if command.snapshot_only:
            return await self._snapshot_only_start(c, bundle_dir, plan, requested)
        if isinstance(plan, Restore):
            if await self._restore(c, bundle_dir, plan, requested):
                metrics.container_started("restore", True, time.monotonic() - requested)
                return c
            metrics.container_started("restore", False, 0.0)
            if c.stop_requested or self.containers.get(cid) is not c:
                return c  # stopped meanwhile: no cold start either
            gpus = c.gpus
            c = self._new_container(command)
            c.gpus = gpus  # the same ones: the failed restore holds them no more
            plan = None
        await c.start(bundle_dir, plan)
        metrics.container_started("cold", True, time.monotonic() - requested)
        return c

    async def _snapshot_only_start(
        self, c: Container, bundle_dir: Path, plan: Plan, requested: float
    ) -> Container:
        """Snapshot then stop: start cold and checkpoint when this node holds
        the claim; otherwise (a snapshot exists or is being made, or the
        function keeps failing to be snapshotted) start nothing."""
        if not isinstance(plan, Checkpoint):
            log.info(
                "no snapshot to make here", extra={"container_id": c.id, "function": c.function}
            )
            c.state, c.ended_at = "stopped", time.time()
            if self.containers.get(c.id) is c:
                del self.containers[c.id]
            return c
        c.system_log(f"container {c.id} started to make a memory snapshot, then stop")
        await c.start(bundle_dir, plan)
        # A cold start all the same: the node's metrics count it as one.
        metrics.container_started("cold", True, time.monotonic() - requested)
        self._snapshot_only.spawn(self._stop_after_snapshot(c), f"snapshot-only:{c.id}")
        return c

    async def _stop_after_snapshot(self, c: Container) -> None:
        """Once the snapshot is taken (the container is Ready again, restored
        in place) or it failed, the container goes; the snapshot is packed and
        stored on beyond it (``Snapshots.store_later``)."""
        with contextlib.suppress(TimeoutError):
            await c.settled(SNAPSHOT_ONLY_TIMEOUT_S)
        await self.stop(c.id, 0.0, "memory snapshot taken")

    def _new_container(self, command: StartContainer) -> Container:
        c = Container(command, self.layout.container(command.container_id), self)
        self.containers[command.container_id] = c
        return c

    def _allocate_gpus(self, c: Container) -> tuple[GpuInfo, ...]:
        """Given to ``c`` at once (no await in between): two starts never get one GPU."""
        held = {g.index for other in self._live() if other is not c for g in other.gpus}
        return gpu_devices.allocate(self.gpu_inventory, held, c.spec.resources.gpu)

    async def _restore(
        self, c: Container, bundle_dir: Path, plan: Restore, requested: float
    ) -> bool:
        """Restore ``c`` from the planned snapshot and wait until it is Ready;
        on any failure, remove what was restored and say why (False). The
        cached copy is verified beside the restore (``snapshot_digest``): the
        container is not Ready before it passes, so a changed copy never serves."""
        snapshots = self.snapshots
        assert snapshots is not None
        snapshot_id = plan.snapshot.snapshot_id
        c.fallback_on_failure = True
        verified: asyncio.Future[float] | None = None
        try:
            unpacked = await snapshots.cache.ensure(plan.snapshot, c.phases)
            verified = asyncio.ensure_future(snapshots.cache.verify(snapshot_id))
            c.ready_gate = verified
            await c.start(bundle_dir, plan, unpacked)
            c.restored = True  # from now on its heartbeats say so (a failure replaces it)
            await c.settled(RESTORE_READY_TIMEOUT_S)
            c.phases.add("verify", await verified)
            if c.state != "ready":
                raise ContainerStartError(c.error or f"the restored container is {c.state}")
        except Exception as e:  # noqa: BLE001 - whatever it was, a cold start follows
            cause, error = await self._restore_failure(e, verified, plan)
            log.warning(
                "restore failed: starting cold",
                extra={"container_id": c.id, "snapshot_id": snapshot_id, "error": error},
            )
            c.system_log(
                f"restore from memory snapshot {snapshot_id} failed ({error}); starting cold"
            )
            await c.kill(f"restore failed: {error}")
            await self._report_restore(c, snapshot_id, False, error=error, cause=cause)
            return False
        await self._report_restore(c, snapshot_id, True, seconds=time.monotonic() - requested)
        return True

    async def _report_restore(self, c: Container, snapshot_id: str, ok: bool, **how: Any) -> None:
        """One ``SnapshotRestored`` per restore, with an id of its own: a
        redelivered one is counted once."""
        assert self.snapshots is not None
        event = SnapshotRestored(
            snapshot_id=snapshot_id,
            node_id=self.layout.node_id,
            ok=ok,
            event_id=uuid.uuid4().hex,
            **how,
        )
        await self.snapshots.publish(c.app, event)

    async def _restore_failure(
        self, e: Exception, verified: asyncio.Future[float] | None, plan: Restore
    ) -> tuple[RestoreFailure, str]:
        """Why a restore failed: a changed cached copy (whatever broke first:
        CRIU may trip over the change before the digest is done) is dropped and
        fetched again; a blob failing its sha256 is dropped too."""
        snapshots = self.snapshots
        assert snapshots is not None
        if verified is not None and not isinstance(e, SnapshotCorrupted):
            with contextlib.suppress(Exception):
                await verified
            if verified.done() and not verified.cancelled():
                e = verified.exception() or e  # type: ignore[assignment]
        if isinstance(e, CacheCorrupted):
            snapshots.replace_later(plan.snapshot)
            return "cache_corrupted", str(e)
        if isinstance(e, SnapshotCorrupted):
            await asyncio.to_thread(snapshots.cache.drop, plan.snapshot.snapshot_id)
            return "blob_corrupted", f"snapshot corrupted: {e}"
        if isinstance(e, TimeoutError):
            return "restore", f"not ready {RESTORE_READY_TIMEOUT_S:g}s after restore"
        return "restore", f"{type(e).__name__}: {e}"

    async def stop(self, container_id: str, grace_s: float, reason: str = "") -> bool:
        """Stop and forget a container; False when there was none."""
        found = False
        # A loop: a replacement (after a timeout) may take the id while we stop.
        while True:
            pending = self._starting.get(container_id)
            if pending is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(pending)
            c = self.containers.get(container_id)
            if c is None:
                return found
            found = True
            await c.stop(grace_s, reason)
            if self.containers.get(container_id) is c:
                del self.containers[container_id]
                self.changed.set()

    async def replace(self, c: Container, reason: str) -> Container | None:
        """Kill ``c`` and start a fresh container from the same command (same id)."""
        await c.kill(reason)
        if c.stop_requested or self.containers.get(c.id) is not c:
            return None  # stopped or replaced meanwhile
        del self.containers[c.id]
        try:
            return await self.start(c.command)
        except Exception:
            log.exception("could not replace container", extra={"container_id": c.id})
            return None

    async def stop_all(self, grace_s: float) -> None:
        await asyncio.gather(
            *(self.stop(cid, grace_s, "agent stopping") for cid in list(self.containers)),
            return_exceptions=True,
        )
        await self._snapshot_only.close(grace_s)
        await self.stores.close()
