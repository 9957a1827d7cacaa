"""Reading a pipe, tty or pty file descriptor on the event loop, chunk by
chunk as it becomes readable (no thread per reader), until its end: EOF, or
EIO once every holder of a pty's other end is gone. For what epoll cannot
watch (a regular file, /dev/null), ``pollable`` says so first."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator


def pollable(fd: int) -> bool:
    """Whether the event loop can wait for ``fd`` to become readable."""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return False
    loop = asyncio.get_running_loop()
    try:
        loop.add_reader(fd, lambda: None)
    except OSError:  # epoll refuses it (/dev/null)
        return False
    loop.remove_reader(fd)
    return True


async def fd_chunks(fd: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(fd, readable.set)
    try:
        while True:
            await readable.wait()
            readable.clear()
            try:
                chunk = os.read(fd, size)
            except BlockingIOError:
                continue
            except OSError:  # EIO: a pty whose other end is closed
                return
            if not chunk:
                return
            yield chunk
    finally:
        loop.remove_reader(fd)
