"""The runtime's end of the agent socket (``thaw_core.container_protocol``),
with blocking I/O from threads rather than asyncio streams.

Why threads: a sync function's input is read, run and answered by one thread
(see ``runtime.py``), with no hand-off between the event loop and a pool
thread. On these machines such a hand-off costs ~0.1 ms each way, several
times what the socket round trip itself costs.

- :meth:`read` is called by one thread at a time (the runtime's read lock).
- :meth:`send` may be called from any thread; a lock keeps frames whole.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import msgspec
from thaw_core.container_protocol import HEADER, ChannelClosed, Frame, ToRuntime, body_size, pack

# The agent listens before it starts the container; a short retry covers a
# socket that is being bound as the process starts.
CONNECT_TIMEOUT_S = 5.0
# While waiting to be checkpointed: how often to look for the agent's socket.
# It is the restored process's first act, so it bounds restore latency.
REAPPEAR_POLL_S = 0.002

__all__ = ["AgentChannel", "ChannelClosed"]


class AgentChannel:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._rfile = sock.makefile("rb")
        self._decoder = msgspec.msgpack.Decoder(ToRuntime)
        self._send_lock = threading.Lock()
        self._broken = False

    @classmethod
    def connect(cls, path: str, timeout_s: float = CONNECT_TIMEOUT_S) -> AgentChannel:
        deadline = time.monotonic() + timeout_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return cls(sock)
            except (FileNotFoundError, ConnectionRefusedError) as e:
                sock.close()
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"cannot reach the agent at {path}: {e}") from e
                time.sleep(0.05)

    @classmethod
    def await_agent(cls, path: str) -> AgentChannel:
        """Wait, however long it takes, for the agent to listen at ``path``
        again (after a checkpoint), then connect.

        Only ``stat`` while waiting, no socket: whatever CRIU freezes must
        hold no half-made connection. The agent unlinks the socket once it
        accepted our first connection, so its reappearance means a new
        listener (a restore, or the agent taking us back after a failed
        checkpoint).
        """
        while True:
            try:
                os.stat(path)
            except FileNotFoundError:
                time.sleep(REAPPEAR_POLL_S)
                continue
            try:
                return cls.connect(path)
            except ConnectionError:
                time.sleep(REAPPEAR_POLL_S)

    def read(self) -> Any:
        """The next frame (blocking). ``msgspec.DecodeError`` for a frame that
        does not decode (the stream stays in step); ``ChannelClosed`` at the end."""
        try:
            header = self._rfile.read(HEADER.size)
            if len(header) < HEADER.size:
                raise ChannelClosed("the agent closed the connection")
            size = body_size(header)
            body = self._rfile.read(size)
        except (OSError, ValueError) as e:  # ValueError: read from a closed file
            raise ChannelClosed(f"the agent connection broke: {e}") from e
        if len(body) < size:
            raise ChannelClosed("the agent closed the connection inside a frame")
        return self._decoder.decode(body)

    def send(self, *frames: Frame) -> None:
        """Send frames in one write, from any thread; blocks while the agent's
        end is full. A lost connection is not raised here: the reader sees it
        and ends the runtime."""
        data = b"".join(map(pack, frames))
        with self._send_lock:
            if self._broken:
                return
            try:
                self._sock.sendall(data)
            except OSError:
                self._broken = True

    def close(self) -> None:
        """Everything sent so far still reaches the agent."""
        with self._send_lock:
            self._broken = True
            try:
                # Wakes any thread blocked in read(); close() alone would not.
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
