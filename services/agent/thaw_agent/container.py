"""One runc container: launch, stdio pumps, exit watch, teardown.

A container's life::

    starting --Ready--> ready --StopContainer--> draining --> stopped
        |                 |
        +--InitFailed / process died / connection lost--> failed

Starting: mount the overlay root, listen on the socket, make its outbound
network (``container_network``), write config.json,
``runc run --detach`` (or ``runc restore``) with pipes as stdio (CRIU cannot
dump a process whose output is a regular file), then watch the process
through a pidfd (it is not our child once runc exits). What is said over the
socket is ``conversation``'s; snapshots are ``checkpoint``'s. Whatever ends a
container, ``ContainerEvents.container_gone`` is called exactly once, so the
dispatcher releases the inputs it had handed it.

Stopping: ``Shutdown`` frame, wait the grace period, ``runc kill`` TERM then
KILL, ``runc delete --force``, commit its volumes (``container_volumes``),
unmount, remove the container's dir. A failed
container is torn down the same way but stays listed (state ``failed`` and
its error) so that the scheduler's heartbeats show why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

from thaw_core import layers
from thaw_core.container_protocol import Frame, InitFailed, Shutdown
from thaw_core.image_users import ROOT
from thaw_core.private_file import write_private
from thaw_core.schema import ContainerInfo, ContainerState, GpuInfo, StartContainer
from thaw_core.tasks import Background

from thaw_agent import checkpoint, gpu_devices, oci, process, userns
from thaw_agent.channel import RuntimeChannel
from thaw_agent.container_events import ContainerStartError
from thaw_agent.container_network import ContainerNetwork
from thaw_agent.container_volumes import ContainerVolumes
from thaw_agent.conversation import converse
from thaw_agent.ephemeral_disk import make_writable_layer
from thaw_agent.layout import ContainerPaths
from thaw_agent.listed_state import ListedState
from thaw_agent.logship import LogSource, Stream, pump_fd
from thaw_agent.resources import out_of_memory_error
from thaw_agent.snapshots import Checkpoint, Plan, Restore
from thaw_agent.start_phases import StartPhases

if TYPE_CHECKING:
    from thaw_agent.manager import ContainerManager

log = logging.getLogger("thaw.agent.containers")

# After SIGTERM, before SIGKILL.
TERM_GRACE_S = 2.0
EXIT_WAIT_S = 5.0
STDERR_TAIL_LINES = 20
# How long a snapshot's upload waits for its maker's Ready to say what its
# cold start cost (the init is done by then: only restore hooks are left).
COLD_START_WAIT_S = 120.0


class Container:
    state: ListedState[ContainerState] = ListedState()

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
        # What the container runs on: runc, images, snapshots, logs, events.
        self.host = manager
        self.state = "starting"
        self.error = ""
        self.init_failure: InitFailed | None = None
        self.max_inputs = max(1, command.spec.max_inputs)
        self.inflight: set[str] = set()
        self.started_at = time.time()
        self.idle_since = 0.0
        self.pid = 0
        self._source = LogSource(self.app, self.function, self.id)
        self.channel: RuntimeChannel | None = None
        self.user = ROOT  # its image's USER, once the image is mounted
        self.ids = userns.id_range()  # its user namespace's host ids
        self.gpus: tuple[GpuInfo, ...] = ()  # given by the manager before start()
        # Its stdio pumps and its conversation: they end with the process.
        self._tasks = Background(log)
        self._exited = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._ending = False  # we end it ourselves: its death is then no failure
        self._gone_reported = False
        self._teardown_task: asyncio.Task[None] | None = None
        self.ended_at = 0.0
        self.stop_requested = False  # a StopContainer came: no replacement, whatever happens
        self.plan: Plan = None  # memory snapshots: restore / checkpoint / cold
        self.phases = StartPhases()  # where its start's time went
        self.restored = False
        # A restore attempt: its failures fall back to a cold start, so they
        # must not fail the function's inputs as an InitFailed would.
        self.fallback_on_failure = False
        self.ready_gate: Awaitable[object] | None = None  # awaited before Ready (restore check)
        self.ready_gate_wait_s = 0.0  # how long Ready waited for it
        self._settled = asyncio.Event()  # Ready, or failed
        # config.json's environment, less the snapshot flag.
        self.config_env: dict[str, str] = {}
        self.cgroup = manager.layout.cgroup(self.id)
        self.network = ContainerNetwork(manager.deny)
        self.out_of_memory: str | None = None  # died of an OOM kill: its inputs' error
        self.volumes = ContainerVolumes(
            manager.volumes, list(command.spec.volumes), paths.dir / "volumes", self.id
        )

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

    @property
    def ending(self) -> bool:
        """We are ending it (stop, kill, failure): its death is expected."""
        return self._ending

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
            snapshot_only=self.command.snapshot_only,
        )

    def system_log(self, text: str) -> None:
        self.host.shipper.emit(self._source, "system", text)

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
        if self.channel is None:
            raise ConnectionError(f"container {self.id} has no runtime connection")
        await self.channel.send(frame)

    # ------------------------------------------------------------ start

    async def start(
        self, bundle_dir: Path, plan: Plan = None, snapshot_dir: Path | None = None
    ) -> None:
        """Run the container (or restore it from the unpacked snapshot at
        ``snapshot_dir``); returns once runc started it (not once Ready)."""
        p = self.paths
        m = self.host
        self.plan = plan
        try:
            disk_mb = self.spec.resources.ephemeral_disk_mb
            await asyncio.to_thread(make_writable_layer, p, disk_mb)
            if isinstance(plan, Restore):
                assert snapshot_dir is not None
                with self.phases.timed("rootfs changes"):
                    await checkpoint.adopt_changes(snapshot_dir, p)
            sandbox_started = time.perf_counter()
            root = await m.images.root(self.spec)  # the default rootfs, or the image's layers
            await asyncio.to_thread(root.mount, p, self.ids)
            self.user = root.process_user(p)
            # Its socket and volumes are that user's, as the host numbers it.
            host_user = self.ids.host_user(self.user)
            os.chown(p.run, host_user.uid, host_user.gid)
            await self.listen()
            binds = await self.volumes.load(host_user)  # after a restore too: the latest version
            gpus = gpu_devices.gpu_setup(self.gpus)
            # Functions with memory snapshots keep runc's empty namespace, even
            # started cold (the same in every container; container_network).
            snapshots = self.spec.enable_memory_snapshot
            network = None if snapshots else await self.network.open(p.dir, self.ids)
            config = root.apply(
                oci.build_config(
                    container_id=self.id,
                    spec=root.spec_for(self.spec),
                    rootfs=p.rootfs,
                    bundle_dir=bundle_dir,
                    run_dir=p.run,
                    cgroups_path=self.cgroup,
                    runtime=oci.runtime_for(root.python_version, await m.runtime_packages()),
                    extra_env=checkpoint.SNAPSHOT_ENV if isinstance(plan, Checkpoint) else None,
                    volumes=binds,
                    user=self.user,
                    ids=self.ids,
                    gpus=gpus,
                    gpus_hidden=await checkpoint.hides_gpus(self, plan),
                    network=network,
                )
            )
            # 0600: it is runc's alone, and holds the container's whole environment.
            write_private(p.oci / "config.json", json.dumps(config))
            self.config_env = oci.process_env(config, without=checkpoint.SNAPSHOT_ENV)
            images = snapshot_dir / "images" if snapshot_dir is not None else None
            self.phases.add("sandbox", time.perf_counter() - sandbox_started)
            self.pid = await self.launch(images)
        except BaseException as e:
            self._ending = True
            self.state, self.error = "failed", f"start failed: {e}"
            self.ended_at = time.time()
            await self._teardown()
            if isinstance(e, Exception):
                raise ContainerStartError(str(e)) from e
            raise
        self.watch_exit(self.pid)
        self.volumes.start_background_commits()
        self._tasks.spawn(converse(self), f"container:{self.id}:protocol")
        how = "restored from a memory snapshot" if images is not None else "started"
        self.system_log(f"container {self.id} {how} (pid {self.pid})")
        where = {"container_id": self.id, "app": self.app, "function": self.function}
        log.info("container started", extra={**where, "pid": self.pid})

    async def listen(self) -> RuntimeChannel:
        """A fresh socket for the runtime to connect to (again, after a checkpoint)."""
        channel = RuntimeChannel(self.paths.run, owner=self.ids.host_user(self.user))
        await channel.listen()
        self.channel = channel
        return channel

    async def close_channel(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def launch(self, images: Path | None) -> int:
        """``runc run``, or ``runc restore`` from ``images``, with fresh pipes
        as stdio (a restored process is rewired to restore's own fds 0/1/2)."""
        p = self.paths
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        try:
            self._tasks.spawn(self._pump(out_r, "stdout"), f"container:{self.id}:stdout")
            self._tasks.spawn(self._pump(err_r, "stderr"), f"container:{self.id}:stderr")
            if images is None:
                with self.phases.timed("runc run"):
                    return await self.host.runc.run_detached(
                        self.id,
                        bundle=p.oci,
                        pid_file=p.pid_file,
                        log_file=p.runc_log,
                        stdout_fd=out_w,
                        stderr_fd=err_w,
                    )
            return await checkpoint.restore(self, images, stdout_fd=out_w, stderr_fd=err_w)
        finally:
            # The container holds its own copies now; ours would keep the pipes open.
            os.close(out_w)
            os.close(err_w)

    async def _pump(self, fd: int, stream: Stream) -> None:
        shipper = self.host.shipper

        def on_line(line: str) -> None:
            if stream == "stderr":
                self._stderr_tail.append(line)
            shipper.emit(self._source, stream, line)

        await pump_fd(fd, on_line)

    def watch_exit(self, pid: int) -> None:
        """Set ``_exited`` when the container's init process ends. Only the
        current process counts: a checkpointed one's end is expected."""
        self._exited.clear()

        def ended() -> None:
            if pid == self.pid:
                self._on_exit()

        process.on_exit(pid, ended)

    def _on_exit(self) -> None:
        self._exited.set()
        if not self._ending:
            tail = "\n".join(self._stderr_tail)
            self.fail(
                "the container's process exited" + (f"; its last stderr:\n{tail}" if tail else "")
            )

    async def wait_exited(self, timeout_s: float) -> None:
        """Until the process ends, or ``timeout_s`` passed (no error either way)."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._exited.wait(), timeout_s)

    def mark_ready(self, max_inputs: int) -> None:
        """The runtime said Ready: take inputs."""
        self.max_inputs = max(1, max_inputs)
        self.state = "ready"
        self.idle_since = time.time()
        self.phases.ready_at = time.perf_counter()
        self._settled.set()
        where = {"container_id": self.id, "max_inputs": max_inputs}
        log.info("container ready", extra={**where, "phases": self.phases.summary()})
        if not self.command.snapshot_only:  # it takes no inputs: no puller for it
            self.host.events.container_ready(self)

    def check_not_ending(self) -> None:
        """Stopped while it was being snapshotted: bring nothing back."""
        if self._ending:
            raise ContainerStartError(f"container {self.id} stopped during its snapshot")

    async def settled(self, timeout_s: float) -> None:
        """Until the container is Ready or failed (TimeoutError after ``timeout_s``)."""
        await asyncio.wait_for(self._settled.wait(), timeout_s)

    async def cold_start_s(self) -> float:
        """Once it settled: its start's seconds without the snapshot it took
        (``StartPhases.cold_start_s``); 0.0 when it never got Ready."""
        with contextlib.suppress(TimeoutError):
            await self.settled(COLD_START_WAIT_S)
        return self.phases.cold_start_s()

    # ------------------------------------------------------------ ending

    def fail(self, error: str) -> None:
        """Mark the container failed, release its inputs and tear it down."""
        if self._ending or self.state in ("failed", "stopped"):
            return
        self._ending = True
        # Read before the teardown removes the cgroup: an OOM kill says more
        # than the exit or the broken socket it caused.
        self.out_of_memory = out_of_memory_error(self.spec.resources, self.cgroup)
        self.state, self.error = "failed", self.out_of_memory or error
        self.ended_at = time.time()
        self._settled.set()
        log.warning("container failed", extra={"container_id": self.id, "error": self.error})
        self.system_log(f"container {self.id} failed: {self.error}")
        if self.init_failure is not None and not self.fallback_on_failure:
            self.host.events.container_init_failed(self, self.init_failure)
        self._report_gone()
        self._teardown_task = asyncio.create_task(
            self._teardown(), name=f"container:{self.id}:teardown"
        )

    def _report_gone(self) -> None:
        if not self._gone_reported:
            self._gone_reported = True
            self.host.stores.release(self.id)  # its leased queue items, to other getters
            self.host.events.container_gone(self)

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
        if self.alive and self.channel is not None and self.channel.connected:
            remaining = max(0.0, deadline - time.monotonic())
            with contextlib.suppress(Exception):
                await self.send(Shutdown(grace_s=remaining))
            await self.wait_exited(max(0.5, remaining))
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
        runc = self.host.runc
        try:
            if self.alive:
                if term_grace_s > 0:
                    await runc.kill(self.id, "TERM")
                    await self.wait_exited(term_grace_s)
                if self.alive:
                    await runc.kill(self.id, "KILL")
                    await self.wait_exited(EXIT_WAIT_S)
            await runc.delete(self.id)
        except Exception:
            log.exception("could not remove runc container", extra={"container_id": self.id})
        # Output pumps end at EOF once the process is gone; give them a moment to flush.
        await self._tasks.close(1.0)
        await self.close_channel()
        await self.volumes.close()  # its writes, committed before its dir goes
        try:
            await self.network.close()
        except Exception:
            log.exception("could not end the container's network", extra={"container_id": self.id})
        try:
            await asyncio.to_thread(layers.remove_tree, self.paths.dir)
        except Exception:
            log.exception("could not clean the container's dir", extra={"container_id": self.id})
