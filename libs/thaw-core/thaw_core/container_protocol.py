"""The agent <-> container-runtime protocol, over one unix socket per container.

The agent listens on ``<container dir>/agent.sock``, mounted into the
container at ``/run/thaw/agent.sock``; the runtime inside connects to it. The
container never sees NATS or any cluster credential: everything it learns and
says goes through this socket.

Framing: a 4-byte big-endian length, then a msgpack-encoded tagged Struct.
msgpack rather than JSON because inputs and results carry pickled bytes.

A container's life, as the runtime sees it::

    connect -> Hello -> (load bundle, enter hooks) -> Ready | InitFailed
    loop: RunInput -> Output      (up to max_inputs at once)
          CancelInput             (best effort)
          Shutdown                (exit hooks, then exit 0)

Memory snapshots (``THAW_SNAPSHOT=1`` in a cold container's env): after the
``enter(snap=True)`` hooks the runtime says ``SnapshotReady`` and closes its
connection (CRIU cannot dump a connected external unix socket), then waits
for the socket to reappear. The agent checkpoints it; whenever a process
comes back (restored from that image, or left running because the
checkpoint failed) the agent listens again and its first frame is
``RestoreState``; the runtime answers ``Hello`` with the new id, runs the
``enter(snap=False)`` hooks and says ``Ready`` as usual::

    ... SnapshotReady, close | checkpoint | restore, connect
        <- RestoreState -> Hello -> (enter snap=False) -> Ready | InitFailed
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgspec

from thaw_core.schema import Invoke, Result

MAX_FRAME = 256 * 1024 * 1024  # matches the largest payload the gateway accepts, with room
SOCKET_IN_CONTAINER = "/run/thaw/agent.sock"


class Frame(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    pass


# runtime -> agent
class Hello(Frame, tag="hello"):
    container_id: str
    pid: int


class Ready(Frame, tag="ready"):
    """Enter hooks ran; the container takes inputs."""

    max_inputs: int


class InitFailed(Frame, tag="init_failed"):
    """Loading the bundle or an enter hook raised: calls fail with this."""

    error: str
    traceback: str
    exc: bytes = b""


class SnapshotReady(Frame, tag="snapshot_ready"):
    """``enter(snap=True)`` hooks ran; the runtime closes its connection and
    waits to be checkpointed."""


class Output(Frame, tag="output"):
    input_id: str
    result: Result


# agent -> runtime
class RunInput(Frame, tag="run_input"):
    input_id: str
    invoke: Invoke


class CancelInput(Frame, tag="cancel_input"):
    input_id: str


class Shutdown(Frame, tag="shutdown"):
    grace_s: float = 10.0


class RestoreState(Frame, tag="restore_state"):
    """First frame on a snapshotted runtime's new connection: who it is now.
    ``env`` is the container's current environment (fresh secrets included);
    the runtime applies it over the one captured in the snapshot."""

    container_id: str
    env: dict[str, str] = {}


ToAgent = Hello | Ready | InitFailed | Output | SnapshotReady
ToRuntime = RunInput | CancelInput | Shutdown | RestoreState

_HEADER = struct.Struct(">I")
_encoder = msgspec.msgpack.Encoder()


def pack(frame: Frame) -> bytes:
    body = _encoder.encode(frame)
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Reads frames of one union from a stream; build one per connection."""

    def __init__(self, reader: asyncio.StreamReader, kind: Any) -> None:
        self._reader = reader
        self._decoder = msgspec.msgpack.Decoder(kind)

    async def read(self) -> Any:
        """The next frame, or None at a clean end of stream."""
        try:
            header = await self._reader.readexactly(_HEADER.size)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise ConnectionError("connection closed inside a frame header") from e
            return None
        (size,) = _HEADER.unpack(header)
        if size > MAX_FRAME:
            raise ValueError(f"frame of {size} bytes exceeds the {MAX_FRAME} limit")
        return self._decoder.decode(await self._reader.readexactly(size))
