"""`thaw container exec CONTAINER -- CMD...`: run a command in a running
container (a function's or a sandbox), its stdin, stdout and stderr joined
to this terminal's, its exit code this command's. With ``-t`` the command
gets a terminal (its output then all comes on stdout) and this one's is put
in raw mode while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

from thaw_core.fd_chunks import fd_chunks, pollable
from thaw_core.schema.sandboxes import ExecStart, ExecStarted

from thaw.container_process import ContainerProcess, StreamReader, _expect, container_op

_CHUNK = 64 * 1024


async def _copy_out(reader: StreamReader[Any], fd: int) -> None:
    async for chunk in reader.chunks():
        os.write(fd, chunk)


async def _copy_in(process: ContainerProcess[Any]) -> None:
    """This process's stdin to the container's process, until its end."""
    stdin = process.stdin
    fd = sys.stdin.fileno()
    if not pollable(fd):  # a file, /dev/null: all there at once
        stdin.write(await asyncio.to_thread(sys.stdin.buffer.read))
    else:
        async for chunk in fd_chunks(fd, _CHUNK):
            stdin.write(chunk)
            await stdin.drain.aio()
    stdin.write_eof()
    await stdin.drain.aio()


@contextlib.contextmanager
def _raw_terminal(wanted: bool) -> Iterator[None]:
    if not (wanted and sys.stdin.isatty()):
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def run_exec(container_id: str, argv: list[str], *, tty_wanted: bool) -> int:
    """Run ``argv`` in the container; its exit code."""
    op = ExecStart(argv=argv, tty=tty_wanted)
    started: ExecStarted = _expect(await container_op(container_id, op), ExecStarted)
    process: ContainerProcess[bytes] = ContainerProcess(container_id, started.process_id, text=False)
    with _raw_terminal(tty_wanted):
        feeding = asyncio.create_task(_copy_in(process))
        try:
            await asyncio.gather(
                _copy_out(process.stdout, sys.stdout.fileno()),
                _copy_out(process.stderr, sys.stderr.fileno()),
            )
            code = await process.wait.aio()
        finally:
            feeding.cancel()
            with contextlib.suppress(BaseException):
                await feeding
    return code
