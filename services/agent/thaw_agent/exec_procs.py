"""Processes in a container that the agent talks to: a sandbox's main
process (``runc run`` in the foreground) and each ``runc exec``.

Each is a child of the agent with pipes (or a pty, for ``tty``) as stdio.
Output is kept per stream from the first byte not yet read by its reader:
reading at offset N forgets what came before N (the reader has it), and a
stream holding ``BUFFER_BYTES`` unread stops being read, so the process
blocks on a full pipe rather than the agent's memory growing. Input is
taken by offset too, so a write asked again after a lost reply is not
written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from thaw_core.fd_chunks import fd_chunks
from thaw_core.schema.sandboxes import ExecStream

log = logging.getLogger("thaw.agent.exec")

# Unread output per stream before the process is made to wait.
BUFFER_BYTES = 8 * 1024 * 1024
READ_CHUNK = 64 * 1024


class OutputBuffer:
    """One stream's output from ``base`` on, and whether it has ended."""

    def __init__(self) -> None:
        self.base = 0
        self.data = bytearray()
        self.closed = False
        self.changed = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def append(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) >= BUFFER_BYTES:
            self.room.clear()
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def read(self, offset: int, wait_s: float, max_bytes: int) -> tuple[bytes, int, bool]:
        """(data from ``offset``, the offset after it, whether the stream ended
        there). An offset before what is kept reads from the oldest byte kept."""
        if offset > self.base:
            drop = min(offset - self.base, len(self.data))
            del self.data[:drop]
            self.base += drop
            if len(self.data) < BUFFER_BYTES:
                self.room.set()
        if offset >= self.end and not self.closed and wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), wait_s)
        start = max(offset, self.base) - self.base
        chunk = bytes(self.data[start : start + max_bytes])
        after = self.base + start + len(chunk)
        return chunk, after, self.closed and after >= self.end


class ContainerProcess:
    """One process and its streams; ``returncode`` once it ended."""

    def __init__(
        self,
        process_id: str,
        proc: asyncio.subprocess.Process,
        pty_fd: int | None,
        pid_file: Path | None,
    ) -> None:
        self.id = process_id
        self.pid_file = pid_file
        self.proc = proc
        self.streams: dict[ExecStream, OutputBuffer] = {"stdout": OutputBuffer(), "stderr": OutputBuffer()}
        self.written = 0
        self._pty_fd = pty_fd
        self._write_lock = asyncio.Lock()
        self._stdin_closed = False
        self.done = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def spawn(
        cls,
        process_id: str,
        argv: Sequence[str],
        *,
        tty: bool = False,
        pid_file: Path | None = None,
    ) -> ContainerProcess:
        """Start ``argv`` (a runc command) with pipes, or a pty as all three
        of its stdio with ``tty`` (its output is then all on stdout).
        ``pid_file``: where runc writes the host pid of what it runs, so
        that ``kill`` reaches it (a signal to runc exec cannot be SIGKILL)."""
        if tty:
            master, slave = os.openpty()
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
                )
            finally:
                os.close(slave)
            p = cls(process_id, proc, master, pid_file)
            p._tasks.append(asyncio.create_task(p._pump_fd(master, p.streams["stdout"])))
            p.streams["stderr"].close()
        else:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            p = cls(process_id, proc, None, pid_file)
            assert proc.stdout is not None and proc.stderr is not None
            p._tasks.append(asyncio.create_task(p._pump(proc.stdout, p.streams["stdout"])))
            p._tasks.append(asyncio.create_task(p._pump(proc.stderr, p.streams["stderr"])))
        p._tasks.append(asyncio.create_task(p._watch()))
        return p

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.done.is_set() else None

    async def _pump(self, reader: asyncio.StreamReader, out: OutputBuffer) -> None:
        try:
            while chunk := await reader.read(READ_CHUNK):
                out.append(chunk)
                await out.room.wait()
        finally:
            out.close()

    async def _pump_fd(self, fd: int, out: OutputBuffer) -> None:
        try:
            async for chunk in fd_chunks(fd, READ_CHUNK):
                out.append(chunk)
                await out.room.wait()
        finally:
            out.close()

    async def _watch(self) -> None:
        await self.proc.wait()
        # Output still in the pipes comes before the end is told.
        pumps = [t for t in self._tasks if t is not asyncio.current_task()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*pumps, return_exceptions=True), 2.0)
        if self._pty_fd is not None:
            for t in pumps:
                t.cancel()
            with contextlib.suppress(OSError):
                os.close(self._pty_fd)
            self._pty_fd = None
        self.done.set()

    async def write(self, offset: int, data: bytes, eof: bool) -> int:
        """Take ``data`` as the input from ``offset``; the bytes taken so far."""
        async with self._write_lock:
            skip = self.written - offset
            if skip < 0:
                return self.written  # a gap: the writer sends again from here
            fresh = data[skip:]
            try:
                if fresh and not self._stdin_closed:
                    await self._send(fresh)
                self.written += len(fresh)
                if eof and not self._stdin_closed:
                    self._stdin_closed = True
                    await self._send_eof()
            except (BrokenPipeError, ConnectionResetError):
                self._stdin_closed = True  # it stopped reading: what it did not take is dropped
                self.written += len(fresh)
            return self.written

    async def _send(self, data: bytes) -> None:
        if self._pty_fd is not None:
            await asyncio.to_thread(os.write, self._pty_fd, data)
            return
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(data)
        await stdin.drain()

    async def _send_eof(self) -> None:
        if self._pty_fd is not None:
            await asyncio.to_thread(os.write, self._pty_fd, b"\x04")  # ^D: the tty's end of input
            return
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.close()

    async def wait(self, wait_s: float) -> int | None:
        if wait_s > 0 and not self.done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.done.wait(), wait_s)
        return self.returncode

    def kill(self) -> None:
        """Kill what runc runs for it, then runc itself."""
        if self.proc.returncode is not None:
            return
        if self.pid_file is not None:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(self.pid_file.read_text().strip()), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), 5.0)
        for t in self._tasks:
            t.cancel()
