"""The agent's end of one container's unix socket (``container_protocol``).

The agent listens on ``<container dir>/run/agent.sock`` before the container
starts; the runtime inside connects to ``/run/thaw/agent.sock``. Exactly one
connection is accepted: a second one is closed at once.

Frames sent in one turn of the event loop leave in one write: the inputs of
one fetch reach a container in one syscall (and one wake-up of its reader),
not one each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from typing import Any

from thaw_core.container_protocol import ChannelClosed, Frame, FrameReader, ToAgent, pack
from thaw_core.image_users import ROOT, ImageUser

SOCKET_NAME = "agent.sock"
# sun_path holds 108 bytes; deep state dirs (pytest's tmp dirs) exceed it.
_SUN_PATH_MAX = 107


def bind_unix(path: Path, owner: ImageUser = ROOT) -> socket.socket:
    """A listening unix socket at ``path``, however long the path is: a long
    one is bound through ``/proc/self/fd/<fd of its directory>/``. Only
    ``owner`` (the container's process user) may connect to it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) <= _SUN_PATH_MAX:
            sock.bind(str(path))
        else:
            dfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
            try:
                sock.bind(f"/proc/self/fd/{dfd}/{path.name}")
            finally:
                os.close(dfd)
        os.chmod(path, 0o600)
        if owner != ROOT:
            os.chown(path, owner.uid, owner.gid)
        sock.listen(4)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class RuntimeChannel:
    def __init__(self, run_dir: Path, owner: ImageUser = ROOT) -> None:
        self.path = run_dir / SOCKET_NAME
        self.owner = owner
        self._server: asyncio.AbstractServer | None = None
        self._connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._frames: FrameReader | None = None
        # Frames sent this turn of the loop, written together at its end.
        self._unsent: list[bytes] = []
        self._writer: asyncio.StreamWriter | None = None

    async def listen(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(
            self._on_connection, sock=bind_unix(self.path, self.owner)
        )

    def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connected.done():
            writer.close()  # one runtime per container
            return
        self._frames = FrameReader(reader, ToAgent)
        self._writer = writer
        self._connected.set_result(None)

    async def accept(self, timeout_s: float) -> None:
        """Wait for the runtime to connect; then stop listening and remove the
        socket file: a runtime paused for a memory snapshot waits for it to
        reappear (``listen`` on a new channel) before it reconnects."""
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), timeout_s)
        finally:
            if self._server is not None:
                self._server.close()
            self.path.unlink(missing_ok=True)

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def read(self) -> Any:
        """The next frame from the runtime, or None when it closed the connection."""
        if self._frames is None:
            raise ChannelClosed("the runtime has not connected")
        return await self._frames.read()

    async def send(self, frame: Frame) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise ChannelClosed("the runtime's connection is closed")
        if not self._unsent:
            asyncio.get_running_loop().call_soon(self._flush)
        self._unsent.append(pack(frame))
        # What earlier turns wrote waits here while the runtime does not read.
        await writer.drain()

    def _flush(self) -> None:
        frames, self._unsent = self._unsent, []
        # A connection closed meanwhile drops them, as it would had they been
        # written: the runtime is gone and its inputs are released.
        if frames and self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"".join(frames))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if not self._connected.done():
            self._connected.cancel()
        if self._writer is not None:
            self._flush()  # what was sent before closing still reaches the runtime
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
