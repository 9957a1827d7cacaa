"""The embedded stack's child processes, one at a time: their parent-death
signal, stopping one by its stop plan, killing leftovers of an earlier stack,
and the words for how one ended. ``thaw.stack.supervisor`` decides when."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from thaw.stack.parts import Part
from thaw.stack.state import stack_processes

log = logging.getLogger("thaw.stack")

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def tail(path: Path | None, n: int = 30, *, since: int = 0) -> str:
    """The last ``n`` lines of a log, not looking before byte offset ``since``."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(since, size - 64 * 1024))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def death_signal_setter(sig: int) -> Callable[[], None] | None:
    if _prctl is None:
        return None

    def preexec() -> None:  # runs in the child after fork, after setuid, before exec
        _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)

    return preexec


def start_process(part: Part) -> None:
    """Start one part in its own session, its output appended to its log;
    OSError when it cannot be started."""
    assert part.log_path is not None
    part.restart_at = None
    kwargs: dict[str, Any] = dict(part.popen_kwargs)
    kwargs.setdefault("cwd", part.cwd)
    with open(part.log_path, "ab") as logf:
        if part.log_offset < 0:  # this stack's first start of it
            part.log_offset = logf.tell()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        logf.write(f"--- {stamp} thaw: starting {part.name}: {' '.join(part.argv)}\n".encode())
        logf.flush()
        try:
            part.proc = subprocess.Popen(
                part.argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=part.env,
                start_new_session=True,
                # Only a resolved C call runs in the child: safe despite threads.
                preexec_fn=death_signal_setter(part.death_signal),  # noqa: PLW1509
                **kwargs,
            )
        except OSError:
            part.proc = None
            raise
    part.started_at = time.monotonic()


def kill_leftovers(state_dir: Path) -> None:
    """SIGKILL what is left with this stack's marker once its parts stopped
    (e.g. Postgres backends that outlived a killed postmaster)."""
    for p in stack_processes(state_dir):
        log.warning("killing leftover process %d (%s)", p.pid, proc_name(p))
        with contextlib.suppress(psutil.Error):
            p.kill()


async def stop_process(part: Part, *, force: bool) -> None:
    """Stop one part by its stop plan (signals and waits); ``force`` goes
    straight to SIGKILL."""
    proc = part.proc
    if proc is None or proc.poll() is not None:
        part.proc = None
        return
    for sig, wait_s in part.stop_plan:
        if force and sig != signal.SIGKILL:
            continue
        with contextlib.suppress(ProcessLookupError):
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)  # its whole session, e.g. Postgres' children
            else:
                proc.send_signal(sig)
        deadline = time.monotonic() + wait_s
        while proc.poll() is None and time.monotonic() < deadline:
            if force and sig != signal.SIGKILL:
                break
            await asyncio.sleep(0.05)
        if proc.poll() is not None:
            break
        log.warning("%s did not exit after %s; escalating", part.name, sig.name)
    part.last_exit = proc.poll()
    part.proc = None


def stop_leftovers(state_dir: Path) -> None:
    """Stop processes of an earlier stack on this state dir whose supervisor
    died without stopping them (we hold the lock, so none is supervised)."""
    left = stack_processes(state_dir)
    if not left:
        return
    log.warning(
        "stopping %d leftover process(es) of an earlier stack: %s",
        len(left),
        ", ".join(f"{p.pid} ({proc_name(p)})" for p in left),
    )
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(left, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)


def exit_text(rc: int) -> str:
    if rc < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-rc).name}"
        return f"signal {-rc}"
    return f"code {rc}"


def down_text(part: Part) -> str:
    if part.last_exit is None:
        return "not running"
    return f"not running (exited with {exit_text(part.last_exit)})"


def proc_name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:80] or p.name()
    except psutil.Error:
        return "?"
