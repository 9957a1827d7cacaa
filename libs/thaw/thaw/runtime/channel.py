"""The runtime's end of the agent socket (``thaw_core.container_protocol``).

Frames are read on the event loop. They are written from any thread: a sync
input's worker thread sends its own ``Output``, so that the result does not
wait for the loop to wake up first (a thread hop is ~0.1 ms on these
machines, a fair share of a warm call's budget). Writes go through their own
descriptor (a dup of the socket), under a lock, whole frames at a time.
"""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time

from thaw_core.container_protocol import Frame, FrameReader, ToRuntime, pack

# The agent listens before it starts the container; a short retry covers a
# socket that is being bound as the process starts.
CONNECT_TIMEOUT_S = 5.0


class AgentChannel:
    def __init__(
        self, sock: socket.socket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._frames = FrameReader(reader, ToRuntime)
        self._transport_writer = writer  # owns `sock`; only ever used to close it
        # Its own descriptor, closed only by us under the lock: a thread
        # sending while the transport closes `sock` cannot write into a
        # descriptor number the process has reused meanwhile.
        self._out = sock.dup()
        self._lock = threading.Lock()
        self._broken = False
        self._writable = select.poll()
        self._writable.register(self._out, select.POLLOUT)

    @classmethod
    async def connect(cls, path: str, timeout_s: float = CONNECT_TIMEOUT_S) -> AgentChannel:
        deadline = time.monotonic() + timeout_s
        loop = asyncio.get_running_loop()
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, path)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                sock.close()
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"cannot reach the agent at {path}: {e}") from e
                await asyncio.sleep(0.05)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(sock, reader, writer)

    async def read(self) -> ToRuntime | None:
        """The next frame; None when the agent closed the connection."""
        return await self._frames.read()

    def send(self, frame: Frame) -> None:
        """Send one frame, from any thread; blocks while the agent's end is full.
        A lost connection is not raised here: the reader sees it and ends the runtime."""
        data = memoryview(pack(frame))
        with self._lock:
            while data and not self._broken:
                try:
                    data = data[self._out.send(data) :]
                except BlockingIOError:
                    # Non-blocking, as the loop needs `sock` (same open file) to be.
                    self._writable.poll()
                except OSError:
                    self._broken = True

    async def close(self) -> None:
        with self._lock:
            self._broken = True
            self._out.close()
        self._transport_writer.close()
        try:
            await self._transport_writer.wait_closed()
        except ConnectionError:
            pass
