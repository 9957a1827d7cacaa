"""This node's sandboxes: containers whose main process is the user's command.

A sandbox is set up as a function's container is (``oci.build_config``: the
same namespaces, capabilities, cgroup limits and overlay root on the node's
rootfs), except that its process runs ``SandboxSpec.command`` (or sleeps,
without one) and the runtime's environment is not given to it. Its
secrets' values are in its environment (config.json is 0600, root's). The
main process runs under ``runc run`` in the foreground, the agent's child,
so its exit code is known; ``timeout_s`` and ``idle_timeout_s`` kill it.
Unless ``block_network``, it has outbound network (as upstream's,
``container_network``); with it, only its own loopback.
An ended sandbox stays known for ``ENDED_TTL_S`` (its exit code and output
can still be read), then is forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from thaw_core import layers
from thaw_core.contract import CONTAINER_ENV_NAMES, SANDBOX_FUNCTION, SANDBOX_SPEC_NAME
from thaw_core.private_file import write_private
from thaw_core.schema import ContainerInfo, ContainerState, FunctionSpec, SecretsGrant, check_name
from thaw_core.schema.sandboxes import MAIN_PROCESS, SandboxEnd, SandboxSpec

from thaw_agent import oci, userns
from thaw_agent.container_events import ContainerStartError
from thaw_agent.container_network import ContainerNetwork
from thaw_agent.ephemeral_disk import make_writable_layer
from thaw_agent.exec_group import ProcessGroup
from thaw_agent.exec_procs import ContainerProcess
from thaw_agent.layout import ContainerPaths
from thaw_agent.listed_state import ListedState
from thaw_agent.reservations import Reserved, reserved
from thaw_agent.secrets import fetch_secrets

if TYPE_CHECKING:
    from thaw_agent.manager import ContainerManager

log = logging.getLogger("thaw.agent.sandboxes")

ENDED_TTL_S = 300.0
# How long runc may take to have the container running.
START_TIMEOUT_S = 30.0
_POLL_S = 0.005
# What a sandbox without a command runs: nothing, until it is ended.
_SLEEP = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"]


def function_spec(spec: SandboxSpec) -> FunctionSpec:
    """The sandbox as a function spec, for what containers of both share
    (limits, secrets, the image's root)."""
    return FunctionSpec(
        name=SANDBOX_SPEC_NAME, module="", qualname="", resources=spec.resources,
        env=dict(spec.env), secrets=list(spec.secrets), timeout_s=spec.timeout_s,
        image=spec.image,
    )  # fmt: skip


class Sandbox:
    state: ListedState[ContainerState] = ListedState()

    def __init__(
        self,
        spec: SandboxSpec,
        paths: ContainerPaths,
        host: ContainerManager,
        grant: SecretsGrant | None = None,
    ) -> None:
        self.spec = spec
        self.grant = grant
        self.id = spec.sandbox_id
        self.app = spec.app
        self.paths = paths
        self.host = host
        self.state = "starting"
        self.error = ""
        self.started_at = time.time()
        self.ended_at = 0.0
        self.tags = dict(spec.tags)
        self.ended_by: SandboxEnd = ""
        self.group = ProcessGroup(self.id, host.runc, paths.dir / "exec")
        self.last_active = time.monotonic()
        self.ended = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.network = ContainerNetwork(host.deny)

    @property
    def main(self) -> ContainerProcess:
        return self.group.get(MAIN_PROCESS)

    @property
    def running(self) -> bool:
        main = self.group.processes.get(MAIN_PROCESS)
        return self.state == "ready" and main is not None and not main.done.is_set()

    @property
    def returncode(self) -> int | None:
        main = self.group.processes.get(MAIN_PROCESS)
        return main.returncode if main is not None and self.ended.is_set() else None

    def touch(self) -> None:
        self.last_active = time.monotonic()

    def info(self) -> ContainerInfo:
        return ContainerInfo(
            container_id=self.id, app=self.app, function=SANDBOX_FUNCTION, version=0,
            state=self.state, inflight=0, max_inputs=0, started_at=self.started_at,
            error=self.error,
        )  # fmt: skip

    async def start(self) -> None:
        p, m = self.paths, self.host
        fspec = function_spec(self.spec)
        try:
            await asyncio.to_thread(make_writable_layer, p, self.spec.resources.ephemeral_disk_mb)
            empty = p.dir / "bundle"  # no code bundle: an empty dir where functions have one
            empty.mkdir(exist_ok=True)
            root = await m.images.root(fspec)
            ids = userns.id_range()  # not host root, as function containers
            await asyncio.to_thread(root.mount, p, ids)
            user = root.process_user(p)
            secrets = (
                await fetch_secrets(m.bus, self.app, fspec, self.grant) if fspec.secrets else {}
            )
            network = None if self.spec.block_network else await self.network.open(p.dir, ids)
            config = root.apply(
                oci.build_config(
                    container_id=self.id,
                    spec=root.spec_for(fspec),
                    rootfs=p.rootfs,
                    bundle_dir=empty,
                    run_dir=p.run,
                    cgroups_path=m.layout.cgroup(self.id),
                    runtime=oci.no_runtime(),
                    user=user,
                    ids=ids,
                    network=network,
                )
            )
            process = config["process"]
            env = [e for e in process["env"] if e.partition("=")[0] not in CONTAINER_ENV_NAMES]
            env += [f"{k}={v}" for k, v in secrets.items()]
            process["env"] = env
            process["args"] = list(self.spec.command) or list(_SLEEP)
            if self.spec.workdir:
                process["cwd"] = self.spec.workdir
            write_private(p.oci / "config.json", json.dumps(config))
            argv = m.runc.command(
                "run", "--bundle", str(p.oci), "--pid-file", str(p.pid_file), self.id
            )
            main = await ContainerProcess.spawn(MAIN_PROCESS, argv, pid_file=p.pid_file)
            self.group.add(main)
            self._tasks.append(asyncio.create_task(self._watch(main)))
            await self._until_running(main)
        except BaseException as e:
            self.state, self.error = "failed", f"start failed: {e}"
            self.ended_by = "failed"
            await self._teardown()
            self.ended_at = time.time()
            self.ended.set()
            if isinstance(e, Exception):
                raise ContainerStartError(str(e)) from e
            raise
        self.state = "ready"
        self._tasks.append(asyncio.create_task(self._limits()))
        log.info("sandbox started", extra={"container_id": self.id, "app": self.app})

    async def _until_running(self, main: ContainerProcess) -> None:
        """Until runc says the container runs (exec needs it), or it ended."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not main.done.is_set():
            state = await self.host.runc.state(self.id)
            if state is not None and state.get("status") == "running":
                return
            if time.monotonic() > deadline:
                raise ContainerStartError(f"not running {START_TIMEOUT_S:g}s after runc run")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(main.done.wait(), _POLL_S)
        out, _, _ = await main.streams["stderr"].read(0, 0, 4096)
        if self.state == "starting":
            raise ContainerStartError(
                f"exited with code {main.returncode} at start: {out.decode(errors='replace').strip()}"
            )

    async def _watch(self, main: ContainerProcess) -> None:
        await main.done.wait()
        if self.state != "failed":
            self.state = "stopped"
        if not self.ended_by:
            self.ended_by = "exited"
        self.ended_at = time.time()
        await self._teardown()
        self.ended.set()
        log.info(
            "sandbox ended",
            extra={"container_id": self.id, "returncode": main.returncode, "why": self.error},
        )

    async def _limits(self) -> None:
        """Kill it at its timeout, or once idle for its idle timeout."""
        timeout_at = self.started_at + self.spec.timeout_s
        idle_s = self.spec.idle_timeout_s
        while not self.ended.is_set():
            now = time.time()
            if now >= timeout_at:
                await self.terminate(f"timed out after {self.spec.timeout_s:g}s", "timeout")
                return
            wake = timeout_at - now
            if idle_s is not None:
                busy = any(
                    p.returncode is None and p.id != MAIN_PROCESS
                    for p in self.group.processes.values()
                )
                if busy:
                    self.touch()
                idle_for = time.monotonic() - self.last_active
                if idle_for >= idle_s:
                    await self.terminate(f"idle for {idle_s:g}s", "timeout")
                    return
                wake = min(wake, idle_s - idle_for, 1.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.ended.wait(), max(wake, 0.01))

    async def terminate(self, why: str = "terminated", by: SandboxEnd = "terminated") -> None:
        """Kill every process of the sandbox; returns once it is gone."""
        if self.ended.is_set():
            return
        if not self.error:
            self.error = why
        if not self.ended_by:
            self.ended_by = by
        await self.host.runc.kill(self.id, "KILL")
        main = self.group.processes.get(MAIN_PROCESS)
        if main is not None:
            main.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), 10.0)

    async def _teardown(self) -> None:
        with contextlib.suppress(Exception):
            await self.host.runc.kill(self.id, "KILL")
        try:
            await self.host.runc.delete(self.id)
        except Exception:
            log.exception("could not remove runc container", extra={"container_id": self.id})
        await self.group.close()
        try:
            await self.network.close()
        except Exception:
            log.exception("could not end the sandbox's network", extra={"container_id": self.id})
        try:
            await asyncio.to_thread(layers.remove_tree, self.paths.dir)
        except Exception:
            log.exception("could not clean the sandbox's dir", extra={"container_id": self.id})

    async def close(self) -> None:
        await self.terminate("the agent is stopping")
        for t in self._tasks:
            t.cancel()


class SandboxManager:
    """This node's sandboxes, by id."""

    def __init__(self, host: ContainerManager) -> None:
        self.host = host
        self.sandboxes: dict[str, Sandbox] = {}

    def get(self, sandbox_id: str) -> Sandbox | None:
        return self.sandboxes.get(sandbox_id)

    async def start(self, spec: SandboxSpec, grant: SecretsGrant | None = None) -> Sandbox:
        """Start ``spec``; ``grant``: its command's leave to fetch its secrets."""
        sid = spec.sandbox_id
        check_name("container", sid)
        check_name("app", spec.app)
        if spec.resources.gpu:
            raise ContainerStartError(
                f"gpu={spec.resources.gpu!r}: sandboxes with GPUs are not served yet"
            )
        existing = self.sandboxes.get(sid)
        if existing is not None:
            if existing.spec != spec:
                raise ContainerStartError(f"sandbox {sid} exists already; ids must be unique")
            return existing  # a repeated command
        sandbox = Sandbox(spec, self.host.layout.container(sid), self.host, grant)
        self.sandboxes[sid] = sandbox
        await sandbox.start()
        return sandbox

    async def stop(self, sandbox_id: str) -> bool:
        """End a sandbox (``thaw container stop``); False when there is none."""
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox is None:
            return False
        await sandbox.terminate("stopped through the API")
        return True

    def infos(self) -> list[ContainerInfo]:
        now = time.time()
        for sid, s in list(self.sandboxes.items()):
            if s.ended.is_set() and now - s.ended_at > ENDED_TTL_S:
                del self.sandboxes[sid]
        return [s.info() for s in self.sandboxes.values()]

    def reserved(self) -> Reserved:
        live = [s for s in self.sandboxes.values() if not s.ended.is_set()]
        return reserved((s.spec.resources, s.paths) for s in live)

    async def stop_all(self) -> None:
        await asyncio.gather(
            *(s.close() for s in list(self.sandboxes.values())), return_exceptions=True
        )
