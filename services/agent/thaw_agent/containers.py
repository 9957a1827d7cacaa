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
from thaw_core.container_protocol import Frame, Hello, InitFailed, Output, Ready, Shutdown
from thaw_core.schema import ContainerInfo, ContainerState, StartContainer, check_name

from thaw_agent import mounts, oci
from thaw_agent.bundles import BundleCache
from thaw_agent.channel import RuntimeChannel
from thaw_agent.layout import ContainerPaths, NodeLayout
from thaw_agent.logship import LogShipper, LogSource, Stream, pump
from thaw_agent.runc import Runc

log = logging.getLogger("thaw.agent.containers")

# The runtime connects within seconds; this only catches one that never will.
CONNECT_TIMEOUT_S = 120.0
# After SIGTERM, before SIGKILL.
TERM_GRACE_S = 2.0
EXIT_WAIT_S = 5.0
FAILED_TTL_S = 60.0
STDERR_TAIL_LINES = 20


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

    async def start(self, bundle_dir: Path) -> None:
        """Run the container; returns once runc started it (not once Ready)."""
        p = self.paths
        m = self._m
        try:
            await asyncio.to_thread(p.make)
            await asyncio.to_thread(mounts.mount_overlay, m.base_rootfs, p.upper, p.work, p.rootfs)
            self._channel = RuntimeChannel(p.run)
            await self._channel.listen()
            config = oci.build_config(
                container_id=self.id,
                spec=self.spec,
                rootfs=p.rootfs,
                bundle_dir=bundle_dir,
                run_dir=p.run,
                cgroups_path=m.layout.cgroup(self.id),
                runtime=oci.runtime_files(),
            )
            (p.oci / "config.json").write_text(json.dumps(config))
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            try:
                self._spawn(self._pump(out_r, "stdout"), "stdout")
                self._spawn(self._pump(err_r, "stderr"), "stderr")
                self.pid = await m.runc.run_detached(
                    self.id,
                    bundle=p.oci,
                    pid_file=p.pid_file,
                    log_file=p.runc_log,
                    stdout_fd=out_w,
                    stderr_fd=err_w,
                )
            finally:
                # The container holds its own copies now; ours would keep the pipes open.
                os.close(out_w)
                os.close(err_w)
        except BaseException as e:
            self._ending = True
            self.state, self.error = "failed", f"start failed: {e}"
            self.ended_at = time.time()
            await self._teardown()
            if isinstance(e, Exception):
                raise ContainerStartError(str(e)) from e
            raise
        self._watch_exit()
        self._spawn(self._converse(), "protocol")
        self.system_log(f"container {self.id} started (pid {self.pid})")
        log.info(
            "container started",
            extra={
                "container_id": self.id,
                "app": self.app,
                "function": self.function,
                "pid": self.pid,
            },
        )

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

    def _watch_exit(self) -> None:
        """Set ``_exited`` when the container's init process ends (pidfd: it is
        not our child, so there is no SIGCHLD or waitpid for it)."""
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            self._on_exit()
            return

        def readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
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
            hello = await channel.read()
            if not isinstance(hello, Hello) or hello.container_id != self.id:
                raise ValueError(f"expected Hello from container {self.id}, got {hello!r}")
            first = await channel.read()
            match first:
                case Ready(max_inputs=n):
                    if self.state != "starting":
                        return
                    self.max_inputs = max(1, n)
                    self.state = "ready"
                    self.idle_since = time.time()
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

    # ------------------------------------------------------------ ending

    def fail(self, error: str) -> None:
        """Mark the container failed, release its inputs and tear it down."""
        if self._ending or self.state in ("failed", "stopped"):
            return
        self._ending = True
        self.state, self.error = "failed", error
        self.ended_at = time.time()
        log.warning("container failed", extra={"container_id": self.id, "error": error})
        self.system_log(f"container {self.id} failed: {error}")
        if self.init_failure is not None:
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
    ) -> None:
        self.layout = layout
        self.shipper = shipper
        self.base_rootfs = base_rootfs or hosttools.default_rootfs()
        self.runc = Runc(layout.runc_root)
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
        try:
            bundle_dir = await self.bundles.ensure(command.bundle_sha256)
        except Exception as e:
            c.state, c.error, c.ended_at = "failed", str(e), time.time()
            raise ContainerStartError(str(e)) from e
        await c.start(bundle_dir)
        return c

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
