"""Files of the embedded stack under its state dir.

::

    <state_dir>/       0700 (0710 with Postgres' group when we are root: its
                       user must reach postgres/, and may not list the rest)
      stack.pid        pid of the running supervisor (`thaw up`)
      stack.lock       flock held by that supervisor for its whole life
      stack.json       what it runs: parts, pids, ports, restarts, state
      admin-token      the first admin token (mode 0600)
      postgres-password  the embedded Postgres' password (mode 0600)
      logs/<part>.log  each part's stdout/stderr; logs/stack.log for --detach
      nats/            JetStream store
      postgres/        Postgres data dir
      blobs/           blob store (file backend)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from thaw_core.private_file import private_dir, read_or_create

# Set in the environment of every process a stack starts, so that leftovers of
# a supervisor that died hard can be found and stopped, and tests can check
# that `thaw down` left nothing behind.
STACK_ENV = "THAW_STACK_DIR"


@dataclass(frozen=True)
class StackPaths:
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "stack.pid"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "stack.lock"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def admin_token_file(self) -> Path:
        return self.state_dir / "admin-token"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def log(self, part: str) -> Path:
        return self.logs_dir / f"{part}.log"

    @property
    def nats_dir(self) -> Path:
        return self.state_dir / "nats"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    def make(self) -> None:
        # Credentials live here (admin token, Postgres password, the secrets
        # key): no other user may even list it.
        private_dir(self.state_dir)
        private_dir(self.logs_dir)

    # ---------------------------------------------------------------- pid file

    def read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def live_pid(self) -> int | None:
        """The supervisor's pid if one runs on this state dir, else None."""
        pid = self.read_pid()
        if pid is None or not pid_alive(pid):
            return None
        # A recycled pid belongs to something else: trust the lock instead.
        return pid if self.lock_held() else None

    def lock_held(self) -> bool:
        """True when some process holds stack.lock (a live supervisor)."""
        try:
            fd = os.open(self.lock_file, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- stack.json

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_file)

    # ---------------------------------------------------------------- admin token

    def admin_token(self, *, create: bool = True) -> str | None:
        """The stack's admin token, made (``secrets.token_urlsafe``) on first use."""
        path = self.admin_token_file
        if not create:
            with contextlib.suppress(FileNotFoundError):
                return path.read_text().strip()
            return None
        return read_or_create(path, lambda: "thaw_" + secrets.token_urlsafe(32))


class StackLock:
    """An exclusive flock on stack.lock, held for the supervisor's life.

    The kernel drops it when the process dies however it dies, so it cannot go
    stale the way a pid file can."""

    def __init__(self, paths: StackPaths) -> None:
        self.paths = paths
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.set_inheritable(fd, False)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def pid_alive(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stack_processes(state_dir: Path, *, exclude: set[int] | None = None) -> list[psutil.Process]:
    """Every live process started by a stack on ``state_dir`` (found through
    ``THAW_STACK_DIR`` in its environment), including Postgres' own children."""
    want = str(state_dir)
    skip = exclude or set()
    found = []
    for p in psutil.process_iter(["pid"]):
        if p.pid in skip or p.pid == os.getpid():
            continue
        try:
            if p.environ().get(STACK_ENV) == want and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found
