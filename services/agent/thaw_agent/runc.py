"""runc, called as a subprocess, on this agent's own ``--root``.

Each agent passes its own state dir as ``--root`` so that its containers are
apart from other agents' on the same machine and from any other runc user.
runc's own messages go to a per-container ``--log`` file (JSON): after a
successful ``run --detach`` the container keeps runc's stdout/stderr (our
pipes) open, so those can't be read to EOF for an error message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from thaw_core import hosttools

log = logging.getLogger("thaw.agent.runc")

COMMAND_TIMEOUT_S = 30.0


class RuncError(Exception):
    pass


class Runc:
    def __init__(self, root: Path, binary: Path | None = None) -> None:
        self.root = root
        self.binary = binary or hosttools.runc_path()

    def _argv(self, *args: str, log_file: Path | None = None) -> list[str]:
        argv = [str(self.binary), "--root", str(self.root)]
        if log_file is not None:
            argv += ["--log", str(log_file), "--log-format", "json"]
        return [*argv, *args]

    def command(self, *args: str) -> list[str]:
        """The argv of a runc command on this root, for one the caller runs itself."""
        return self._argv(*args)

    async def _call(self, *args: str, timeout_s: float = COMMAND_TIMEOUT_S) -> tuple[int, str, str]:
        return await _exec(self._argv(*args), timeout_s=timeout_s)

    async def run_detached(
        self,
        container_id: str,
        *,
        bundle: Path,
        pid_file: Path,
        log_file: Path,
        stdout_fd: int,
        stderr_fd: int,
        timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> int:
        """Start the container; its stdout/stderr are the given pipe ends. Returns its pid."""
        argv = self._argv(
            "run", "--detach", "--bundle", str(bundle), "--pid-file", str(pid_file),
            container_id, log_file=log_file,
        )  # fmt: skip
        rc, _, _ = await _exec(argv, stdout=stdout_fd, stderr=stderr_fd, timeout_s=timeout_s)
        if rc != 0:
            raise RuncError(f"runc run failed ({rc}): {last_error(log_file) or 'no message'}")
        return _read_pid(pid_file, "run")

    async def checkpoint(
        self, container_id: str, *, image_path: Path, work_path: Path, log_file: Path,
        timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:  # fmt: skip
        """CRIU-dump the container into ``image_path``; it is gone afterwards."""
        argv = hosttools.runc_checkpoint_cmd(
            container_id, image_path, work_path, state_root=self.root
        )
        argv[1:1] = ["--log", str(log_file), "--log-format", "json"]
        rc, _, err = await _exec(argv, timeout_s=timeout_s)
        if rc != 0:
            why = last_error(log_file) or err.strip() or "no message"
            raise RuncError(
                f"runc checkpoint failed ({rc}): {why}{criu_tail(work_path, 'dump.log')}"
            )

    async def restore_detached(
        self,
        container_id: str,
        *,
        bundle: Path,
        image_path: Path,
        work_path: Path,
        pid_file: Path,
        log_file: Path,
        stdout_fd: int,
        stderr_fd: int,
        timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> int:
        """``runc restore --detach`` from ``image_path``; the restored process's
        stdout/stderr become the given pipe ends. Returns its host pid."""
        argv = hosttools.runc_restore_cmd(
            container_id, bundle, image_path, work_path, state_root=self.root
        )
        argv[1:1] = ["--log", str(log_file), "--log-format", "json"]
        argv[-1:-1] = ["--pid-file", str(pid_file)]
        rc, _, _ = await _exec(argv, stdout=stdout_fd, stderr=stderr_fd, timeout_s=timeout_s)
        if rc != 0:
            why = last_error(log_file) or "no message"
            raise RuncError(
                f"runc restore failed ({rc}): {why}{criu_tail(work_path, 'restore.log')}"
            )
        return _read_pid(pid_file, "restore")

    async def kill(self, container_id: str, signal: str = "TERM") -> bool:
        """Signal the container's processes; False when it no longer runs."""
        rc, _, err = await self._call("kill", "--all", container_id, signal)
        if rc != 0:
            log.debug("runc kill %s %s: %s", container_id, signal, err.strip())
        return rc == 0

    async def delete(self, container_id: str) -> None:
        """Remove the container (killing what is left of it); fine when it is gone."""
        rc, _, err = await self._call("delete", "--force", container_id)
        if rc != 0 and "does not exist" not in err and "not exist" not in err:
            raise RuncError(f"runc delete {container_id} failed: {err.strip()}")

    async def list(self) -> list[dict[str, Any]]:
        if not self.root.exists():
            return []
        rc, out, err = await self._call("list", "--format", "json")
        if rc != 0:
            raise RuncError(f"runc list failed: {err.strip()}")
        return json.loads(out or "null") or []

    async def state(self, container_id: str) -> dict[str, Any] | None:
        rc, out, _ = await self._call("state", container_id)
        return json.loads(out) if rc == 0 else None


def last_error(log_file: Path) -> str:
    """The last error-level message in a runc JSON log."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg", "")).strip()
    return ""


def criu_tail(work_path: Path, name: str, lines: int = 5) -> str:
    """CRIU's last error lines from its log in the work dir, for an error message."""
    try:
        text = (work_path / name).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # "rlimit: Can't setup RLIMIT_NOFILE" is logged as an error on every run: noise.
    errors = [ln for ln in text if "Error" in ln and "RLIMIT_NOFILE" not in ln]
    return ("; criu: " + " | ".join(errors[-lines:])) if errors else ""


async def _exec(
    argv: list[str],
    *,
    stdout: int = asyncio.subprocess.PIPE,
    stderr: int = asyncio.subprocess.PIPE,
    timeout_s: float,
) -> tuple[int, str, str]:
    """Run one runc command to its end; killed if it outlives ``timeout_s`` or
    the caller is cancelled, so no runc is ever left behind. When stdout/stderr
    are a container's pipe ends (run, restore), only the exit code is waited
    for: the container keeps those pipes open, and reading them to the end
    would block until it exits."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr
    )
    piped = stdout == asyncio.subprocess.PIPE and stderr == asyncio.subprocess.PIPE
    try:
        if piped:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        else:
            await asyncio.wait_for(proc.wait(), timeout_s)
            out = err = b""
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _read_pid(pid_file: Path, command: str) -> int:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError) as e:
        raise RuncError(f"runc {command} left no usable pid file: {e}") from None
