"""One HTTP request to a web endpoint, as the gateway, the agent and the
container's runtime pass it along.

The request's head (and its first body chunk) rides in the ``Invoke`` that
runs it (``Invoke.web``), so a request is an input like any other: placed,
scaled from zero and redelivered as one. The rest travels on core NATS
subjects of its own (``contract.WEB_REQUEST`` / ``WEB_RESPONSE``):

- the agent says ``WebAccepted`` on ``.resp`` when a container takes it, or,
  when the container's first word is the response, says so in that part
  (``WebResponsePart.accepted_by``): one message, not two, per answer;
- the agent asks for the next body chunk on ``.req`` (request/reply), the
  gateway answers ``WebBodyChunk``: the body is read from the client only as
  fast as the app consumes it;
- the agent sends the response as ``WebResponsePart``\\ s on ``.resp``, one at a
  time: every part but the last is a request the gateway answers once it
  wrote the part to the client (``WebPartAck``), so a slow client slows the
  app rather than filling anyone's memory.

A websocket (``WebHead.websocket``, ``asgi_app`` only) uses the same two
subjects: the app's accept, messages and close go on ``.resp``, each but the
close answered with ``WebPartAck`` once the client has it; the client's
messages are pulled on ``.req`` one at a time as the app receives, answered
by ``WebSocketData``, by ``WebSocketClose`` once the client closed, or by
``WebSocketIdle`` when nothing came for a while (the agent asks again, so
that a gateway gone is noticed).

These messages carry raw body bytes, so they are msgpack-encoded
(``encode_web`` / ``web_decoder``), not JSON like the other wire types.
"""

from __future__ import annotations

from typing import Any

import msgspec

from thaw_core.schema.base import Message, Spec

# The largest body chunk one message carries (well under NATS's 1 MiB default).
WEB_CHUNK_BYTES = 256 * 1024
# The largest websocket message either way: one NATS message, with room.
WEB_SOCKET_MESSAGE_BYTES = 768 * 1024

Header = tuple[str, str]

# Meaningful for one connection only, so never passed on (RFC 9110, 7.6.1).
HOP_BY_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class WebHead(Spec):
    """What a container needs to start serving one request."""

    request_id: str
    method: str
    # The whole path, root_path included (ASGI's convention).
    path: str
    query: bytes = b""
    headers: list[Header] = []
    # Where the endpoint is mounted: "/web/<app>/<label>" in the path form, "" by host.
    root_path: str = ""
    scheme: str = "http"
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    # The body's first chunk, and whether more follows (asked for on .req).
    body: bytes = b""
    more_body: bool = False
    # An ``Upgrade: websocket`` request: the app gets an ASGI "websocket" scope.
    websocket: bool = False


class WebAccepted(Message, tag="web_accepted"):
    container_id: str = ""


class WebBodyChunk(Message, tag="web_body"):
    body: bytes = b""
    more: bool = False


class WebResponsePart(Message, tag="web_response"):
    # Set on the first part only: the response head.
    status: int = 0
    headers: list[Header] = []
    body: bytes = b""
    more: bool = False
    # The container that took the request, where this part is the first the
    # gateway hears of it (no ``WebAccepted`` came before).
    accepted_by: str = ""


class WebPartAck(Message, tag="web_part_ack"):
    # The client went away: the app should stop producing.
    gone: bool = False


class WebSocketAccept(Message, tag="web_socket_accept"):
    """The app accepts the websocket (ASGI ``websocket.accept``)."""

    subprotocol: str | None = None
    headers: list[Header] = []


class WebSocketData(Message, tag="web_socket_data"):
    """One websocket message, either way: text or bytes."""

    text: str | None = None
    data: bytes | None = None


class WebSocketClose(Message, tag="web_socket_close"):
    """The socket ends: closed by the app (before it accepted: refused), or by the client."""

    code: int = 1000
    reason: str = ""


class WebSocketIdle(Message, tag="web_socket_idle"):
    """Nothing from the client yet: ask again."""


WebSocketEvent = WebSocketData | WebSocketClose
WebToGateway = WebAccepted | WebResponsePart | WebSocketAccept | WebSocketData | WebSocketClose
# What the gateway answers a pull on ``.req`` with.
WebPulled = WebBodyChunk | WebSocketData | WebSocketClose | WebSocketIdle

_encoder = msgspec.msgpack.Encoder()


def encode_web(msg: Message) -> bytes:
    return _encoder.encode(msg)


def web_decoder(kind: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(kind)
