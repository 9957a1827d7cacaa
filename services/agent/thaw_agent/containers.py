"""Containers: start, watch, stop; one ``Container`` per running runc container.

A container's life::

    starting --Ready--> ready --StopContainer--> draining --> stopped
        |                 |
        +--InitFailed / process died / connection lost--> failed

Starting: fetch the bundle, mount the overlay root, listen on the socket,
write config.json, ``runc run --detach`` with pipes as stdio (CRIU cannot
dump a process whose output is a regular file), then watch the process
through a pidfd (it is not our child once runc exits). Whatever ends a
container, ``ContainerEvents.container_gone`` is called exactly once, so the
dispatcher releases the inputs it had handed it.

Memory snapshots (``snapshots``): a start may instead ``runc restore`` a
snapshot (``Restore``: waited for until Ready; any failure removes it and a
cold container starts), or start cold and, once the runtime says
``SnapshotReady``, checkpoint it, restore it in place from the fresh images
and store them in the background (``Checkpoint``). The runtime reconnects
after either, and gets ``RestoreState`` first.

Stopping: ``Shutdown`` frame, wait the grace period, ``runc kill`` TERM then
KILL, ``runc delete --force``, unmount, remove the container's dir. A failed
container is torn down the same way but stays listed (state ``failed`` and
its error) for ``FAILED_TTL_S`` so that the scheduler's heartbeats show why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Protocol

from thaw_core import hosttools
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.container_protocol import (
    Frame,
    Hello,
    InitFailed,
    Output,
    Ready,
    RestoreState,
    Shutdown,
    SnapshotReady,
)
from thaw_core.schema import (
    ContainerInfo,
    ContainerState,
    SnapshotCreateFailed,
    SnapshotRestored,
    StartContainer,
    check_name,
)

from thaw_agent import gpu_snapshot, mounts, oci
from thaw_agent.bundles import BundleCache
from thaw_agent.channel import RuntimeChannel
from thaw_agent.images import NodeImages
from thaw_agent.layout import ContainerPaths, NodeLayout
from thaw_agent.logship import LogShipper, LogSource, Stream, pump
from thaw_agent.runc import Runc
from thaw_agent.snapshots import Checkpoint, Plan, Restore, SnapshotCorrupted, Snapshots, copy_tree

log = logging.getLogger("thaw.agent.containers")

# The runtime connects within seconds; this only catches one that never will.
CONNECT_TIMEOUT_S = 120.0
# After SIGTERM, before SIGKILL.
TERM_GRACE_S = 2.0
EXIT_WAIT_S = 5.0
FAILED_TTL_S = 60.0
STDERR_TAIL_LINES = 20
# A restored container that is not Ready by then is given up for a cold one
# (the scheduler's StartContainer request waits 30 s for the whole start).
RESTORE_READY_TIMEOUT_S = 20.0


class ContainerStartError(Exception):
    pass


class ContainerEvents(Protocol):
    """What the dispatcher hears from containers (called on the event loop)."""

    def container_ready(self, container: Container) -> None: ...
    def container_init_failed(self, container: Container, failure: InitFailed) -> None: ...
    def container_output(self, container: Container, output: Output) -> None: ...
    def container_gone(self, container: Container) -> None: ...


class Container:
    def __init__(
        self,
        command: StartContainer,
        paths: ContainerPaths,
        manager: ContainerManager,
    ) -> None:
        self.command = command
        self.id = command.container_id
        self.spec = command.spec
        self.app = command.app
        self.function = command.spec.name
        self.paths = paths
        self.state: ContainerState = "starting"
        self.error = ""
        self.init_failure: InitFailed | None = None
        self.max_inputs = max(1, command.spec.max_inputs)
        self.inflight: set[str] = set()
        self.started_at = time.time()
        self.idle_since = 0.0
        self.pid = 0
        self._m = manager
        self._source = LogSource(self.app, self.function, self.id)
        self._channel: RuntimeChannel | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._exited = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        # Set when we end the container ourselves: its death is then no failure.
        self._ending = False
        self._gone_reported = False
        self._teardown_task: asyncio.Task[None] | None = None
        self.ended_at = 0.0
        # A StopContainer came: whatever else happens, no replacement.
        self.stop_requested = False
        # Memory snapshots: what this start does (restore / checkpoint / cold).
        self.plan: Plan = None
        self.restored = False
        # A restore attempt: its failures fall back to a cold start, so they
        # must not fail the function's inputs as an InitFailed would.
        self.fallback_on_failure = False
        self._settled = asyncio.Event()  # Ready, or failed

    # ------------------------------------------------------------ views

    @property
    def key(self) -> tuple[str, str]:
        return (self.app, self.function)

    @property
    def free_slots(self) -> int:
        return self.max_inputs - len(self.inflight) if self.state == "ready" else 0

    @property
    def alive(self) -> bool:
        return self.pid > 0 and not self._exited.is_set()

    def info(self) -> ContainerInfo:
        return ContainerInfo(
            container_id=self.id,
            app=self.app,
            function=self.function,
            version=self.command.version,
            state=self.state,
            inflight=len(self.inflight),
            max_inputs=self.max_inputs,
            started_at=self.started_at,
            idle_since=self.idle_since if not self.inflight else 0.0,
            error=self.error,
            restored=self.restored,
        )

    def system_log(self, text: str) -> None:
        self._m.shipper.emit(self._source, "system", text)

    # ------------------------------------------------------------ inputs

    def assign(self, input_id: str) -> None:
        self.inflight.add(input_id)
        self._idle.clear()

    def release(self, input_id: str) -> None:
        self.inflight.discard(input_id)
        if not self.inflight:
            self.idle_since = time.time()
            self._idle.set()

    def retire(self) -> None:
        """Take no new input: the container is about to be killed."""
        if self.state in ("starting", "ready"):
            self.state = "draining"

    async def send(self, frame: Frame) -> None:
        if self._channel is None:
            raise ConnectionError(f"container {self.id} has no runtime connection")
        await self._channel.send(frame)

    # ------------------------------------------------------------ start

    async def start(
        self, bundle_dir: Path, plan: Plan = None, snapshot_dir: Path | None = None
    ) -> None:
        """Run the container (or restore it from the unpacked snapshot at
        ``snapshot_dir``); returns once runc started it (not once Ready)."""
        p = self.paths
        m = self._m
        self.plan = plan
        try:
            await asyncio.to_thread(p.make)
            if isinstance(plan, Restore):
                assert snapshot_dir is not None
                # The snapshot's file-system changes become this container's own.
                await asyncio.to_thread(copy_tree, snapshot_dir / "upper", p.upper)
            root = await m.images.root(self.spec)  # the default rootfs, or the image's layers
            await asyncio.to_thread(root.mount, p)
            self._channel = RuntimeChannel(p.run)
            await self._channel.listen()
            config = root.apply(
                oci.build_config(
                    container_id=self.id,
                    spec=root.spec_for(self.spec),
                    rootfs=p.rootfs,
                    bundle_dir=bundle_dir,
                    run_dir=p.run,
                    cgroups_path=m.layout.cgroup(self.id),
                    runtime=oci.runtime_files(),
                    extra_env=_SNAPSHOT_ENV if isinstance(plan, Checkpoint) else None,
                )
            )
            (p.oci / "config.json").write_text(json.dumps(config))
            images = snapshot_dir / "images" if snapshot_dir is not None else None
            self.pid = await self._launch(images)
        except BaseException as e:
            self._ending = True
            self.state, self.error = "failed", f"start failed: {e}"
            self.ended_at = time.time()
            await self._teardown()
            if isinstance(e, Exception):
                raise ContainerStartError(str(e)) from e
            raise
        self._watch_exit(self.pid)
        self._spawn(self._converse(), "protocol")
        how = "restored from a memory snapshot" if images is not None else "started"
        self.system_log(f"container {self.id} {how} (pid {self.pid})")
        log.info(
            "container started",
            extra={
                "container_id": self.id,
                "app": self.app,
                "function": self.function,
                "pid": self.pid,
            },
        )

    async def _launch(self, images: Path | None) -> int:
        """``runc run``, or ``runc restore`` from ``images``, with fresh pipes
        as stdio (a restored process is rewired to restore's own fds 0/1/2)."""
        p = self.paths
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            self._spawn(self._pump(out_r, "stdout"), "stdout")
            self._spawn(self._pump(err_r, "stderr"), "stderr")
            if images is None:
                return await self._m.runc.run_detached(
                    self.id,
                    bundle=p.oci,
                    pid_file=p.pid_file,
                    log_file=p.runc_log,
                    stdout_fd=out_w,
                    stderr_fd=err_w,
                )
            work = p.dir / f"criu-restore-{time.monotonic_ns()}"
            work.mkdir()
            pid = await self._m.runc.restore_detached(
                self.id,
                bundle=p.oci,
                image_path=images,
                work_path=work,
                pid_file=p.pid_file,
                log_file=p.runc_log,
                stdout_fd=out_w,
                stderr_fd=err_w,
            )
            if (images / _CUDA_SUSPENDED).exists():
                # A GPU snapshot: put the CUDA state back on the GPU.
                await gpu_snapshot.toggle(pid)
            return pid
        finally:
            # The container holds its own copies now; ours would keep the pipes open.
            os.close(out_w)
            os.close(err_w)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        t = asyncio.create_task(coro, name=f"container:{self.id}:{name}")
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _pump(self, fd: int, stream: Stream) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0)
        )
        shipper = self._m.shipper

        def on_line(line: str) -> None:
            if stream == "stderr":
                self._stderr_tail.append(line)
            shipper.emit(self._source, stream, line)

        try:
            await pump(reader, on_line)
        finally:
            transport.close()

    def _watch_exit(self, pid: int) -> None:
        """Set ``_exited`` when the container's init process ends (pidfd: it is
        not our child, so there is no SIGCHLD or waitpid for it). Only the
        current process counts: a checkpointed one's end is expected."""
        loop = asyncio.get_running_loop()
        self._exited.clear()
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            if pid == self.pid:
                self._on_exit()
            return

        def readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if pid == self.pid:
                self._on_exit()

        loop.add_reader(pidfd, readable)

    def _on_exit(self) -> None:
        self._exited.set()
        if not self._ending:
            tail = "\n".join(self._stderr_tail)
            self.fail(
                "the container's process exited" + (f"; its last stderr:\n{tail}" if tail else "")
            )

    async def _converse(self) -> None:
        """The runtime's side of the socket: Hello, Ready | InitFailed, then Outputs."""
        channel = self._channel
        assert channel is not None
        try:
            await channel.accept(CONNECT_TIMEOUT_S)
            if isinstance(self.plan, Restore):
                await channel.send(self._restore_state())
            hello = await channel.read()
            if not isinstance(hello, Hello) or hello.container_id != self.id:
                raise ValueError(f"expected Hello from container {self.id}, got {hello!r}")
            first = await channel.read()
            if isinstance(first, SnapshotReady) and isinstance(self.plan, Checkpoint):
                channel = await self._snapshot(self.plan)
                first = await channel.read()
            match first:
                case Ready(max_inputs=n):
                    if self.state != "starting":
                        return
                    self.max_inputs = max(1, n)
                    self.state = "ready"
                    self.idle_since = time.time()
                    self._settled.set()
                    log.info("container ready", extra={"container_id": self.id, "max_inputs": n})
                    self._m.events.container_ready(self)
                case InitFailed():
                    self.init_failure = first
                    self.system_log(f"initialisation failed: {first.error}\n{first.traceback}")
                    self.fail(f"initialisation failed: {first.error}")
                    return
                case None:
                    raise ConnectionError("the runtime closed its connection before it was ready")
                case _:
                    raise ValueError(f"expected Ready or InitFailed, got {type(first).__name__}")
            while True:
                frame = await channel.read()
                match frame:
                    case Output():
                        self._m.events.container_output(self, frame)
                    case None:
                        if not self._ending:
                            raise ConnectionError("the runtime closed its connection")
                        return
                    case _:
                        raise ValueError(f"unexpected {type(frame).__name__} from the runtime")
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self.fail(f"the runtime did not connect within {CONNECT_TIMEOUT_S:g}s")
        except Exception as e:  # noqa: BLE001 - whatever broke, the container is done for
            if not self._ending:
                # The process may be dying right now; its exit says more than a broken socket.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._exited.wait(), 0.5)
                self.fail(f"runtime protocol error: {type(e).__name__}: {e}")

    # ------------------------------------------------------------ snapshots

    def _restore_state(self) -> RestoreState:
        """Who a restored runtime is now: this container's id and the env its
        config.json gives it (secrets as they are now), less the snapshot flag."""
        config = json.loads((self.paths.oci / "config.json").read_text())
        pairs = (entry.partition("=") for entry in config["process"]["env"])
        env = {k: v for k, _, v in pairs if k not in _SNAPSHOT_ENV}
        return RestoreState(container_id=self.id, env=env)

    async def _snapshot(self, claim: Checkpoint) -> RuntimeChannel:
        """The runtime paused for its snapshot: checkpoint it, bring it back
        (restored in place from the images just written: that proves the
        snapshot restores) and store the snapshot in the background.
        Whatever fails, the container goes on cold. Returns the runtime's
        new channel, RestoreState sent and Hello read."""
        p, m = self.paths, self._m
        snapshots = m.snapshots
        assert snapshots is not None
        snapshot_id = claim.claim.snapshot_id
        # Outside the container's dir: the container may stop while it is packed.
        staging = snapshots.cache.staging(snapshot_id)
        old_pid = self.pid
        if self._channel is not None:
            await self._channel.close()
        try:
            self.pid = 0  # its end is expected now
            (staging / "images").mkdir(parents=True)
            work = p.dir / "criu-dump"
            work.mkdir()
            started = time.monotonic()
            if await self._gpu_snapshot(snapshots):
                # CUDA state into host memory, where CRIU dumps it; the marker
                # tells every restore to toggle it back.
                await gpu_snapshot.toggle(old_pid)
                (staging / "images" / _CUDA_SUSPENDED).touch()
            await m.runc.checkpoint(
                self.id, image_path=staging / "images", work_path=work, log_file=p.runc_log
            )
            dumped = time.monotonic()
            # Copied before the restored process writes to it again.
            await asyncio.to_thread(copy_tree, p.upper, staging / "upper")
            self._check_not_ending()
            channel = await self._listen_again()
            self.pid = await self._launch(staging / "images")
            self._watch_exit(self.pid)
            self.restored = True
            self.system_log(
                f"memory snapshot {snapshot_id} taken in {dumped - started:.2f}s;"
                f" container restored from it (pid {self.pid})"
            )
        except Exception as e:  # noqa: BLE001 - the container goes on without a snapshot
            log.warning(
                "memory snapshot failed",
                extra={"container_id": self.id, "snapshot_id": snapshot_id, "error": str(e)},
            )
            self.system_log(f"memory snapshot failed, going on without it: {e}")
            await snapshots.publish(
                self.app, SnapshotCreateFailed(snapshot_id=snapshot_id, error=str(e))
            )
            if (staging / "images" / _CUDA_SUSPENDED).exists() and _process_alive(old_pid):
                with contextlib.suppress(Exception):  # its CUDA state back where it was
                    await gpu_snapshot.toggle(old_pid)
            await asyncio.to_thread(shutil.rmtree, staging, True)
            channel = await self._resume_cold(old_pid)
        else:
            snapshots.store_later(claim.claim, staging, self.app)
        await channel.accept(CONNECT_TIMEOUT_S)
        await channel.send(self._restore_state())
        hello = await channel.read()
        if not isinstance(hello, Hello) or hello.container_id != self.id:
            raise ValueError(f"expected Hello from container {self.id}, got {hello!r}")
        return channel

    def _check_not_ending(self) -> None:
        """Stopped while it was being snapshotted: bring nothing back."""
        if self._ending:
            raise ContainerStartError(f"container {self.id} stopped during its snapshot")

    async def _gpu_snapshot(self, snapshots: Snapshots) -> bool:
        """Whether this snapshot takes the GPU's state too; says why not when
        the function asks for it and the node can't."""
        if not gpu_snapshot.wanted(self.spec):
            return False
        why = gpu_snapshot.unavailable((await snapshots.fingerprint()).driver)
        if why is None:
            return True
        text = f"GPU snapshot not available on this node: {why}; taking a CPU snapshot"
        log.warning(text, extra={"container_id": self.id})
        self.system_log(text)
        return False

    async def _listen_again(self) -> RuntimeChannel:
        channel = RuntimeChannel(self.paths.run)
        await channel.listen()
        self._channel = channel
        return channel

    async def _resume_cold(self, old_pid: int) -> RuntimeChannel:
        """After a failed checkpoint: the process takes up where it paused
        when CRIU left it running; otherwise a fresh cold one starts."""
        self.restored = False
        self._check_not_ending()
        channel = await self._listen_again()
        if _process_alive(old_pid):
            self.pid = old_pid
            self._watch_exit(old_pid)
            return channel
        with contextlib.suppress(Exception):
            await self._m.runc.delete(self.id)
        config_path = self.paths.oci / "config.json"
        config = json.loads(config_path.read_text())
        env = config["process"]["env"]
        config["process"]["env"] = [e for e in env if e.partition("=")[0] not in _SNAPSHOT_ENV]
        config_path.write_text(json.dumps(config))
        self.pid = await self._launch(None)
        self._watch_exit(self.pid)
        return channel

    async def settled(self, timeout_s: float) -> None:
        """Until the container is Ready or failed (TimeoutError after ``timeout_s``)."""
        await asyncio.wait_for(self._settled.wait(), timeout_s)

    # ------------------------------------------------------------ ending

    def fail(self, error: str) -> None:
        """Mark the container failed, release its inputs and tear it down."""
        if self._ending or self.state in ("failed", "stopped"):
            return
        self._ending = True
        self.state, self.error = "failed", error
        self.ended_at = time.time()
        self._settled.set()
        log.warning("container failed", extra={"container_id": self.id, "error": error})
        self.system_log(f"container {self.id} failed: {error}")
        if self.init_failure is not None and not self.fallback_on_failure:
            self._m.events.container_init_failed(self, self.init_failure)
        self._report_gone()
        self._teardown_task = asyncio.create_task(
            self._teardown(), name=f"container:{self.id}:teardown"
        )

    def _report_gone(self) -> None:
        if not self._gone_reported:
            self._gone_reported = True
            self._m.events.container_gone(self)

    async def stop(self, grace_s: float, reason: str = "") -> None:
        """Drain (no new inputs; wait for running ones), Shutdown, then kill.
        Everything within about ``grace_s`` plus the kill's own few seconds."""
        self.stop_requested = True
        if self.state == "failed" or self._ending:
            await self._wait_teardown()
            return
        self._ending = True
        self.state = "draining"
        self.system_log(f"container {self.id} stopping" + (f": {reason}" if reason else ""))
        deadline = time.monotonic() + max(0.0, grace_s)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
        if self.alive and self._channel is not None and self._channel.connected:
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(Exception):
                await self.send(Shutdown(grace_s=remaining))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exited.wait(), max(0.5, remaining))
        await self._finish("stopped")

    async def kill(self, reason: str) -> None:
        """End it now (a stuck input, a terminated call): no Shutdown, no grace."""
        if self.state == "failed" or self._ending:
            await self._wait_teardown()
            return
        self._ending = True
        self.retire()
        self.system_log(f"container {self.id} killed: {reason}")
        await self._finish("stopped", term_grace_s=0.0)

    async def _finish(self, state: ContainerState, term_grace_s: float = TERM_GRACE_S) -> None:
        self._teardown_task = asyncio.create_task(self._teardown(term_grace_s))
        await self._wait_teardown()
        self.state = state
        self.ended_at = time.time()
        self._report_gone()

    async def _wait_teardown(self) -> None:
        if self._teardown_task is not None:
            await asyncio.shield(self._teardown_task)

    async def _teardown(self, term_grace_s: float = TERM_GRACE_S) -> None:
        """Kill what is left, delete the runc container, unmount, remove the dir."""
        runc = self._m.runc
        try:
            if self.alive:
                if term_grace_s > 0:
                    await runc.kill(self.id, "TERM")
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._exited.wait(), term_grace_s)
                if self.alive:
                    await runc.kill(self.id, "KILL")
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._exited.wait(), EXIT_WAIT_S)
            await runc.delete(self.id)
        except Exception:
            log.exception("could not remove runc container", extra={"container_id": self.id})
        # Output pumps end at EOF once the process is gone; give them a moment to flush.
        pumps = [t for t in self._tasks if t is not asyncio.current_task()]
        if pumps:
            _, pending = await asyncio.wait(pumps, timeout=1.0)
            for t in pending:
                t.cancel()
        if self._channel is not None:
            await self._channel.close()
        try:
            await asyncio.to_thread(_remove_container_dir, self.paths.dir)
        except Exception:
            log.exception("could not clean the container's dir", extra={"container_id": self.id})


_SNAPSHOT_ENV = {"THAW_SNAPSHOT": "1"}
# In a snapshot's images dir: its process's CUDA state was suspended (GPU snapshot).
_CUDA_SUSPENDED = "thaw-cuda-suspended"


def _process_alive(pid: int) -> bool:
    """Running (a zombie whose parent has yet to reap it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _remove_container_dir(path: Path) -> None:
    for point in mounts.mounts_under(path):
        mounts.unmount(point)
    shutil.rmtree(path, ignore_errors=True)


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
    ) -> None:
        self.layout = layout
        self.shipper = shipper
        self.base_rootfs = base_rootfs or hosttools.default_rootfs()
        self.images = NodeImages(bus, blob, layout.root / "layers", self.base_rootfs)
        self.runc = Runc(layout.runc_root)
        # None: this node never snapshots (every start is cold).
        self.snapshots = snapshots
        self.bundles = BundleCache(blob, layout.bundles)
        self.containers: dict[str, Container] = {}
        self._starting: dict[str, asyncio.Future[Container]] = {}
        self._events: ContainerEvents | None = None

    @property
    def events(self) -> ContainerEvents:
        if self._events is None:
            raise RuntimeError("ContainerManager.events is not set")
        return self._events

    @events.setter
    def events(self, events: ContainerEvents) -> None:
        self._events = events

    # ------------------------------------------------------------ views

    def get(self, container_id: str) -> Container | None:
        return self.containers.get(container_id)

    def ready(self, key: tuple[str, str]) -> list[Container]:
        return [c for c in self.containers.values() if c.state == "ready" and c.key == key]

    def infos(self) -> list[ContainerInfo]:
        self._prune()
        return [c.info() for c in self.containers.values()]

    def reserved(self) -> tuple[float, int]:
        """(cores, MB) that the node's live containers asked for."""
        live = [c for c in self.containers.values() if c.state in ("starting", "ready", "draining")]
        return (
            sum(c.spec.resources.cpu for c in live),
            sum(c.spec.resources.memory_mb for c in live),
        )

    def _prune(self) -> None:
        now = time.time()
        for cid, c in list(self.containers.items()):
            if c.state == "failed" and now - c.ended_at > FAILED_TTL_S:
                del self.containers[cid]

    # ------------------------------------------------------------ lifecycle

    async def recover(self) -> None:
        """Remove what a previous life of this node's agent left: runc
        containers under our --root, overlay mounts, container dirs."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        for entry in await self.runc.list():
            cid = entry.get("id", "")
            log.warning("removing a stale container", extra={"container_id": cid})
            with contextlib.suppress(Exception):
                await self.runc.kill(cid, "KILL")
            await self.runc.delete(cid)
        if self.layout.containers.exists():
            await asyncio.to_thread(_remove_container_dir, self.layout.containers)
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
        c = Container(command, self.layout.container(cid), self)
        self.containers[cid] = c
        requested = time.monotonic()
        try:
            bundle_dir = await self.bundles.ensure(command.bundle_sha256)
        except Exception as e:
            c.state, c.error, c.ended_at = "failed", str(e), time.time()
            raise ContainerStartError(str(e)) from e
        plan = await self.snapshots.plan(command) if self.snapshots is not None else None
        if isinstance(plan, Restore):
            if await self._restore(c, bundle_dir, plan, requested):
                return c
            if c.stop_requested or self.containers.get(cid) is not c:
                return c  # stopped meanwhile: no cold start either
            c = Container(command, self.layout.container(cid), self)
            self.containers[cid] = c
            plan = None
        await c.start(bundle_dir, plan)
        return c

    async def _restore(
        self, c: Container, bundle_dir: Path, plan: Restore, requested: float
    ) -> bool:
        """Restore ``c`` from the planned snapshot and wait until it is Ready;
        on any failure, remove what was restored and say why (False)."""
        snapshots = self.snapshots
        assert snapshots is not None
        snapshot_id = plan.snapshot.snapshot_id
        c.fallback_on_failure = True
        try:
            unpacked = await snapshots.cache.ensure(plan.snapshot)
            await c.start(bundle_dir, plan, unpacked)
            c.restored = True  # from now on its heartbeats say so (a failure replaces it)
            await c.settled(RESTORE_READY_TIMEOUT_S)
            if c.state != "ready":
                raise ContainerStartError(c.error or f"the restored container is {c.state}")
        except Exception as e:  # noqa: BLE001 - whatever it was, a cold start follows
            if isinstance(e, SnapshotCorrupted):
                await asyncio.to_thread(snapshots.cache.drop, snapshot_id)
                error = f"snapshot corrupted: {e}"
            elif isinstance(e, TimeoutError):
                error = f"not ready {RESTORE_READY_TIMEOUT_S:g}s after restore"
            else:
                error = f"{type(e).__name__}: {e}"
            log.warning(
                "restore failed: starting cold",
                extra={"container_id": c.id, "snapshot_id": snapshot_id, "error": error},
            )
            c.system_log(
                f"restore from memory snapshot {snapshot_id} failed ({error}); starting cold"
            )
            await c.kill(f"restore failed: {error}")
            await snapshots.publish(
                c.app,
                SnapshotRestored(
                    snapshot_id=snapshot_id, node_id=self.layout.node_id, ok=False, error=error
                ),
            )
            return False
        seconds = time.monotonic() - requested
        await snapshots.publish(
            c.app,
            SnapshotRestored(
                snapshot_id=snapshot_id, node_id=self.layout.node_id, ok=True, seconds=seconds
            ),
        )
        return True

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
