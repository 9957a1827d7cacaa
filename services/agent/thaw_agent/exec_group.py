"""The processes exec'd into one container (``runc exec``), by process id.

A sandbox has one (its main process among them); so has each function
container that ``thaw container exec`` reached. ``exec`` starts a process
as the container's own process user, with its environment, limits and
namespaces; its output and input go through ``exec_procs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from pathlib import Path

from thaw_core.schema.sandboxes import ExecStart

from thaw_agent.exec_procs import ContainerProcess
from thaw_agent.runc import Runc

log = logging.getLogger("thaw.agent.exec")

# Processes one container may run at once through exec.
MAX_PROCESSES = 64


class ExecError(Exception):
    """A request that cannot be carried out; ``code`` says how (``ExecErrorCode``)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


class ProcessGroup:
    def __init__(self, container_id: str, runc: Runc, pid_dir: Path) -> None:
        self.container_id = container_id
        self.runc = runc
        self.pid_dir = pid_dir
        self.processes: dict[str, ContainerProcess] = {}
        self._timeouts: set[asyncio.Task[None]] = set()

    def get(self, process_id: str) -> ContainerProcess:
        found = self.processes.get(process_id)
        if found is None:
            raise ExecError(
                f"no process {process_id!r} in container {self.container_id}", "not_found"
            )
        return found

    def add(self, process: ContainerProcess) -> None:
        self.processes[process.id] = process

    async def exec(self, op: ExecStart) -> ContainerProcess:
        if not op.argv:
            raise ExecError("exec needs a command")
        if sum(1 for p in self.processes.values() if p.returncode is None) >= MAX_PROCESSES:
            raise ExecError(
                f"container {self.container_id} runs {MAX_PROCESSES} exec'd processes already",
                "conflict",
            )
        process_id = f"pr-{uuid.uuid4().hex[:12]}"
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.pid_dir / f"{process_id}.pid"
        args = ["exec", "--pid-file", str(pid_file)]
        if op.workdir:
            args += ["--cwd", op.workdir]
        for k, v in op.env.items():
            if not k or "=" in k:
                raise ExecError(f"invalid environment variable name {k!r}")
            args += ["--env", f"{k}={v}"]
        if op.tty:
            args.append("--tty")
        process = await ContainerProcess.spawn(
            process_id,
            self.runc.command(*args, self.container_id, *op.argv),
            tty=op.tty,
            pid_file=pid_file,
        )
        self.add(process)
        if op.timeout_s is not None:
            task = asyncio.create_task(self._timeout(process, op.timeout_s))
            self._timeouts.add(task)
            task.add_done_callback(self._timeouts.discard)
        log.info(
            "exec started",
            extra={"container_id": self.container_id, "process_id": process_id, "argv0": op.argv[0]},
        )
        return process

    async def _timeout(self, process: ContainerProcess, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.done.wait(), seconds)
            return
        log.info("exec timed out", extra={"process_id": process.id, "timeout_s": seconds})
        process.kill()

    async def close(self) -> None:
        for t in list(self._timeouts):
            t.cancel()
        await asyncio.gather(*(p.close() for p in self.processes.values()), return_exceptions=True)
