"""The agent <-> container-runtime protocol, over one unix socket per container.

The agent listens on ``<container dir>/agent.sock``, mounted into the
container at ``/run/thaw/agent.sock``; the runtime inside connects to it. The
container never sees NATS or any cluster credential: everything it learns and
says goes through this socket.

Framing: a 4-byte big-endian length, then a msgpack-encoded tagged Struct.
msgpack rather than JSON because inputs and results carry pickled bytes.

A container's life, as the runtime sees it::

    connect <- Configure -> (apply env) Hello -> (load bundle, enter hooks) -> Ready | InitFailed
    loop: RunInput -> Output      (up to max_inputs at once)
          CancelInput             (best effort)
          Shutdown                (exit hooks, then exit 0)

``Configure`` is the agent's first frame on every connection: who the
container is and its environment, which the runtime applies to
``os.environ`` before it loads anything. It is the only way values that must
not be written on the host (secrets) reach a container; config.json holds
the rest.

The agent sends a container what it needs to run one input, and the
container answers with its outcome; the agent makes the call's ``Result``
of the two (call id, attempts, map id, index and container id are the
agent's to set).

Memory snapshots (``THAW_SNAPSHOT=1`` in a cold container's env): after the
``enter(snap=True)`` hooks the runtime says ``SnapshotReady`` and closes its
connection (CRIU cannot dump a connected external unix socket), then waits
for the socket to reappear. The agent checkpoints it; whenever a process
comes back (restored from that image, or left running because the
checkpoint failed) the agent listens again and sends ``Configure`` as on
any connection; the runtime answers ``Hello`` with the new id, runs the
``enter(snap=False)`` hooks and says ``Ready`` as usual::

    ... SnapshotReady, close | checkpoint | restore, connect
        <- Configure -> Hello -> (enter snap=False) -> Ready | InitFailed
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Literal

import msgspec

from thaw_core.schema import (
    CallStatus,
    Codec,
    WebHead,
    WebSocketAccept,
    WebSocketClose,
    WebSocketData,
    WebSocketEvent,
    now,
)

MAX_FRAME = 256 * 1024 * 1024  # matches the largest payload the gateway accepts, with room
SOCKET_IN_CONTAINER = "/run/thaw/agent.sock"
# Arguments or a value larger than this do not go in a frame: they are a file
# beside the socket (named by RunInput.args_file, Output.value_file), written
# by one side, read and removed by the other, so neither holds a second copy.
FILE_PAYLOAD_BYTES = 16 * 1024 * 1024

# Every frame: this header (the body's length), then the body.
HEADER = struct.Struct(">I")


class ChannelClosed(ConnectionError):
    """The other end closed the connection or it broke; nothing more will come."""


def body_size(header: bytes) -> int:
    """The length a frame header announces; ChannelClosed past ``MAX_FRAME``."""
    (size,) = HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ChannelClosed(f"frame of {size} bytes exceeds the {MAX_FRAME} limit")
    return size


class Frame(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="type"
):
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


class RuntimeSpan(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The runtime's OpenTelemetry span of one input, a child of the span its
    ``RunInput.traceparent`` names. A container has no collector to export to
    (it talks only to its agent), so it reports the span and its agent
    exports it, once it checked that the span belongs where it says."""

    trace_id: str  # 32 hex digits, the RunInput's
    span_id: str  # 16 hex digits, the runtime's own
    parent_id: str  # 16 hex digits: the agent's span for this input
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, str] = {}


class Output(Frame, tag="output"):
    """How one input ended. The fields mean what ``Result``'s of the same
    name mean; ``span``: the runtime's trace span of it, when the input was traced."""

    input_id: str
    status: CallStatus
    # Success: the codec-encoded return value.
    value: bytes = b""
    # ... or, over FILE_PAYLOAD_BYTES, the name of the file beside the socket
    # that holds it, and its sha256 (the agent checks it as it stores it).
    value_file: str = ""
    value_sha256: str = ""
    # Failure: the pickled exception when it pickles, and always its text.
    exc: bytes = b""
    error: str = ""
    traceback: str = ""
    started_at: float = 0.0
    finished_at: float = msgspec.field(default_factory=now)
    span: RuntimeSpan | None = None


# agent -> runtime
class Configure(Frame, tag="configure"):
    """First frame on every connection: who the container is and the
    environment the runtime applies before it loads the bundle. ``restored``:
    this process came back from a memory snapshot."""

    container_id: str
    env: dict[str, str] = {}
    restored: bool = False


class RunInput(Frame, tag="run_input"):
    """One input: what the container needs to run it. ``args`` and
    ``params`` are ``codec``-encoded as in ``Invoke``."""

    input_id: str
    codec: Codec = "pickle"
    method: str | None = None
    params: bytes = b""
    args: bytes = b""
    # ... or, over FILE_PAYLOAD_BYTES, the name of the file beside the socket
    # that holds them (the runtime removes it once read).
    args_file: str = ""
    # The call it is an input of (thaw.current_function_call_id()).
    call_id: str = ""
    # A web endpoint's HTTP request: served by the app, parts below.
    web: WebHead | None = None
    # W3C traceparent of the agent's span for this input ('': not traced).
    traceparent: str = ""


class CancelInput(Frame, tag="cancel_input"):
    input_id: str


class Shutdown(Frame, tag="shutdown"):
    grace_s: float = 10.0


# ------------------------------------------------------------ web requests
# The parts of a web input (``RunInput.web``) between its RunInput and its
# Output; the agent relays each to the gateway (``thaw_core.schema.web``).
# Named by request id, so the agent relays them without keeping any state.


class WebPull(Frame, tag="web_pull"):
    """runtime -> agent: the app wants the next chunk of the request body."""

    request_id: str


class WebSend(Frame, tag="web_send"):
    """runtime -> agent: one response part (the head rides on the first).
    Every part with ``more`` is answered by ``WebSent`` once delivered."""

    request_id: str
    status: int = 0
    headers: list[tuple[str, str]] = []
    body: bytes = b""
    more: bool = False


class WebBody(Frame, tag="web_body"):
    """agent -> runtime: the answer to ``WebPull``."""

    request_id: str
    body: bytes = b""
    more: bool = False
    # The client went away, or the gateway no longer holds the request.
    gone: bool = False


class WebSent(Frame, tag="web_sent"):
    """agent -> runtime: the answer to a ``WebSend`` with ``more`` (or a
    ``WebSocketSend`` but a close)."""

    request_id: str
    gone: bool = False


class WebSocketSend(Frame, tag="web_socket_send"):
    """runtime -> agent: a websocket request's app accepts, sends or closes."""

    request_id: str
    event: WebSocketAccept | WebSocketData | WebSocketClose


class WebSocketReceive(Frame, tag="web_socket_receive"):
    """agent -> runtime: the answer to ``WebPull`` on a websocket: the
    client's next message, or its close."""

    request_id: str
    event: WebSocketEvent


# What the runtime says of a web request, for the agent to relay.
WebFrame = WebPull | WebSend | WebSocketSend
# What the agent answers it with.
WebReply = WebBody | WebSent | WebSocketReceive


# ------------------------------------------------------------ volumes
# ``vol.commit()`` / ``vol.reload()`` in a container: the agent commits or
# reloads the directory it mounted for that volume and answers; any frame
# may come in between (several requests may be under way at once).


class VolumeRequest(Frame, tag="volume_request"):
    """runtime -> agent: commit or reload the volume mounted under ``volume`` (its name)."""

    request_id: str
    op: Literal["commit", "reload"]
    volume: str


class VolumeAnswer(Frame, tag="volume_answer"):
    """agent -> runtime: the volume's version after the request, or why it failed."""

    request_id: str
    version: int = 0
    error: str = ""


# ------------------------------------------------------------ dicts and queues
# ``thaw.Dict`` / ``thaw.Queue`` in a container: the agent relays the
# operation (``thaw_core.schema.stores``, msgpack, opaque to it) to the
# gateway on ``contract.STORE_REQUEST`` and hands back the reply.


class StoreRequest(Frame, tag="store_request"):
    """runtime -> agent: one store operation. ``timeout_s``: how long it may
    wait by itself (a blocking queue get); no answer is wanted when
    ``request_id`` is empty (acks at an input's end)."""

    request_id: str
    op: bytes
    timeout_s: float = 0.0


class StoreBlob(Frame, tag="store_blob"):
    """runtime -> agent: keep ``data`` (a large encoded value, its sha256
    ``sha256``) in the blob store, or with empty ``data`` read it back; the
    answer's ``reply`` is the content read (empty after a write)."""

    request_id: str
    sha256: str
    data: bytes = b""


class StoreAnswer(Frame, tag="store_answer"):
    """agent -> runtime: the gateway's ``StoreReply``, or why none came."""

    request_id: str
    reply: bytes = b""
    error: str = ""


ToAgent = (
    Hello
    | Ready
    | InitFailed
    | Output
    | SnapshotReady
    | WebPull
    | WebSend
    | WebSocketSend
    | VolumeRequest
    | StoreRequest
    | StoreBlob
)
ToRuntime = (
    Configure
    | RunInput
    | CancelInput
    | Shutdown
    | WebBody
    | WebSent
    | WebSocketReceive
    | VolumeAnswer
    | StoreAnswer
)

_encoder = msgspec.msgpack.Encoder()


def pack(frame: Frame) -> bytes:
    body = _encoder.encode(frame)
    return HEADER.pack(len(body)) + body


class FrameReader:
    """Reads frames of one union from a stream; build one per connection."""

    def __init__(self, reader: asyncio.StreamReader, kind: Any) -> None:
        self._reader = reader
        self._decoder = msgspec.msgpack.Decoder(kind)

    async def read(self) -> Any:
        """The next frame, or None at a clean end of stream."""
        try:
            header = await self._reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise ChannelClosed("connection closed inside a frame header") from e
            return None
        return self._decoder.decode(await self._reader.readexactly(body_size(header)))
