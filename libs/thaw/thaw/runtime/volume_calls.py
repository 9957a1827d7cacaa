"""``vol.commit()`` and ``vol.reload()`` inside a container: a request to the
agent over the socket (``VolumeRequest``), answered with ``VolumeAnswer``.

The agent owns the mounted directory and does the work; this side waits for
the answer on whatever thread user code called from (a reader thread keeps
reading meanwhile, so the answer always gets through). Before a reload it
looks through ``/proc`` (the container's own processes only: its pid
namespace) for files under the mount that are open for writing: a reload
replaces files under them, so it refuses, naming them, as upstream does.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Literal

from thaw_core.container_protocol import VolumeAnswer, VolumeRequest

from thaw.exception import InvalidError
from thaw.runtime.channel import AgentChannel
from thaw.runtime.env import RuntimeEnv

# A commit of a large volume may upload for a while; only a lost agent waits this long.
ANSWER_TIMEOUT_S = 3600.0
_WRITE_MODES = (os.O_WRONLY, os.O_RDWR)


class _Calls:
    def __init__(self) -> None:
        self.channel: AgentChannel | None = None
        self.mounts: dict[str, str] = {}  # volume name -> path in the container
        self._pending: dict[str, tuple[threading.Event, list[VolumeAnswer]]] = {}
        self._lock = threading.Lock()

    def attach(self, channel: AgentChannel, env: RuntimeEnv) -> None:
        """The connection requests go over (again, after a restore) and the
        spec's mounts (none when the spec is bad: the start reports that)."""
        self.channel = channel
        try:
            self.mounts = {m.name: m.path for m in env.spec().volumes}
        except ValueError:
            self.mounts = {}

    def answer(self, frame: VolumeAnswer) -> None:
        """From a reader thread: wake whoever waits for this answer."""
        with self._lock:
            waiting = self._pending.pop(frame.request_id, None)
        if waiting is not None:
            waiting[1].append(frame)
            waiting[0].set()

    def request(self, op: Literal["commit", "reload"], volume: str) -> int:
        """Ask the agent to commit or reload ``volume``; its version after."""
        where = self.mounts.get(volume)
        if where is None or self.channel is None:
            raise InvalidError(
                f"Volume {volume!r}.{op}() in a container needs the volume mounted there"
                f" (volumes={{'/path': Volume.from_name({volume!r})}} on the function)"
            )
        if op == "reload":
            open_files = files_open_for_writing(where)
            if open_files:
                raise InvalidError(
                    f"Volume {volume!r}.reload(): files under {where} are open for writing:"
                    f" {', '.join(open_files)}; close them first"
                )
        request_id = uuid.uuid4().hex
        done = threading.Event()
        got: list[VolumeAnswer] = []
        with self._lock:
            self._pending[request_id] = (done, got)
        self.channel.send(VolumeRequest(request_id=request_id, op=op, volume=volume))
        if not done.wait(ANSWER_TIMEOUT_S):
            with self._lock:
                self._pending.pop(request_id, None)
            raise TimeoutError(f"Volume {volume!r}.{op}(): the agent did not answer")
        if got[0].error:
            raise InvalidError(f"Volume {volume!r}.{op}() failed: {got[0].error}")
        return got[0].version


def files_open_for_writing(root: str) -> list[str]:
    """Paths under ``root`` that a process of this container holds open for writing."""
    prefix = root.rstrip("/") + "/"
    found: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds:
            try:
                target = os.readlink(fd)
                if not target.startswith(prefix):
                    continue
                flags = _fd_flags(proc / "fdinfo" / fd.name)
            except OSError:
                continue
            if flags & os.O_ACCMODE in _WRITE_MODES:
                found.add(target)
    return sorted(found)


def _fd_flags(fdinfo: Path) -> int:
    for line in fdinfo.read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    return 0


calls = _Calls()
