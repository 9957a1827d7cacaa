"""The wire contract: one frozen msgspec Struct per event and command.

Every message is tagged (field ``type``) so that a subject which carries
several kinds decodes into a union and is dispatched with ``match``. Unknown
fields are refused, so a producer that drifts from this module is caught at
the first message rather than silently misread. ``proto/`` is generated from
this module by ``make proto``; add every new wire type to ``WIRE_TYPES``.

Subjects (``SUBJECTS`` below is the machine-readable list used for proto/):

- ``thaw.health.<service>``       request/reply: ``HealthReply``
- ``thaw.event.node.<node_id>``   node heartbeats: ``NodeHeartbeat``
- ``thaw.event.error.<service>``  structured errors a service reports: ``ErrorEvent``
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec


class Message(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="type",
):
    """Base of every wire type. Subclasses set ``tag=`` to their wire name."""


def now() -> float:
    return time.time()


# ---------------------------------------------------------------- health

class HealthReply(Message, tag="health"):
    service: str
    status: Literal["ok", "degraded"]
    # One entry per dependency ("nats", "postgres", "blob", ...): "ok" or the error.
    checks: dict[str, str] = {}
    pid: int = 0
    started_at: float = 0.0
    instance: str = ""


# ---------------------------------------------------------------- errors

class ErrorEvent(Message, tag="error"):
    """Published by a service that refused a message, so that the refusal is
    visible off the box and not only in one process's log."""

    service: str
    subject: str
    code: Literal["malformed", "unknown", "too_large", "internal"]
    error: str
    # The first bytes of the refused payload, for whoever debugs the producer.
    payload_preview: str = ""
    at: float = msgspec.field(default_factory=now)


# ---------------------------------------------------------------- nodes

class GpuInfo(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    index: int
    name: str
    memory_mb: int
    uuid: str = ""


class NodeHeartbeat(Message, tag="node_heartbeat"):
    node_id: str
    cores: int
    memory_mb: int
    gpus: list[GpuInfo] = []
    # Free capacity after the containers the node runs now.
    free_cores: float = 0.0
    free_memory_mb: int = 0
    containers: int = 0
    at: float = msgspec.field(default_factory=now)


NodeEvent = NodeHeartbeat

# ---------------------------------------------------------------- registry

# Every wire type, for proto/ generation and for tests that round-trip each.
WIRE_TYPES: tuple[type[Message], ...] = (
    HealthReply,
    ErrorEvent,
    NodeHeartbeat,
)

# subject pattern -> (description, payload types); proto/asyncapi.json is made from it.
SUBJECTS: dict[str, tuple[str, tuple[type[Message], ...]]] = {
    "thaw.health.{service}": ("Request/reply health probe of one service.", (HealthReply,)),
    "thaw.event.node.{node_id}": ("Node heartbeats from agents.", (NodeHeartbeat,)),
    "thaw.event.error.{service}": ("Messages a service refused, and why.", (ErrorEvent,)),
}


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


_encoder = msgspec.json.Encoder()


def decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    """A decoder for one type or a union; build it once per consumer."""
    return msgspec.json.Decoder(kind)
