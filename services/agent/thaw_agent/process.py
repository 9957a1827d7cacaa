"""A container's init process, seen from the host: alive, and when it ends.

It is not the agent's child once ``runc run --detach`` exits, so there is no
SIGCHLD or waitpid for it: its end is watched through a pidfd, and a zombie
whose new parent has yet to reap it counts as ended.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path


def process_alive(pid: int) -> bool:
    """Running (a zombie whose parent has yet to reap it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def on_exit(pid: int, callback: Callable[[], None]) -> None:
    """Call ``callback`` on the running event loop once ``pid`` ends (at once
    when there is no such process)."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        callback()
        return

    def readable() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        callback()

    loop.add_reader(pidfd, readable)
