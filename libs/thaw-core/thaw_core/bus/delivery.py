"""One JetStream delivery: settling it (ack, nak, term), how often it was
delivered, keeping it alive while it is worked on, and the trace it carries."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Literal

from nats.aio.msg import Msg
from opentelemetry import context as otel_context
from opentelemetry import propagate

log = logging.getLogger("thaw_core.bus")

Settle = Literal["ack", "nak", "term"]

# The reply subject of a JetStream delivery; a core request's is the
# requester's inbox, which must never receive "+ACK" or "+TERM".
_ACK_PREFIX = "$JS.ACK."
_SPACE = re.compile(r"\s")

# Keep-alive pings in flight, so that none is collected before it is sent.
_pings: set[asyncio.Task[None]] = set()


def trace_context(msg: Msg) -> otel_context.Context:
    """The OpenTelemetry context its publisher injected into ``msg``'s headers
    (an empty context when it carries none)."""
    if not msg.headers:
        return otel_context.Context()
    return propagate.extract(msg.headers)


def is_delivery_reply(reply: str) -> bool:
    """Whether ``reply`` is a JetStream delivery's ack subject (one token-safe line)."""
    return reply.startswith(_ACK_PREFIX) and _SPACE.search(reply) is None


def _settleable(msg: Any) -> bool:
    reply = getattr(msg, "reply", None) or ""
    return is_delivery_reply(reply) and not getattr(msg, "is_acked", False)


async def settle(msg: Any, how: Settle = "ack", *, delay_s: float | None = None) -> None:
    """Ack, nak (redelivered, after ``delay_s`` when given) or term (never
    redelivered) a JetStream delivery, once: one settled already, or a core
    NATS message, is left alone. A failure is logged, not raised: an unsettled
    delivery is redelivered after its consumer's ack_wait, which at-least-once
    handling absorbs."""
    if not _settleable(msg):
        return
    try:
        if how == "ack":
            await msg.ack()
        elif how == "nak":
            await msg.nak(delay=delay_s)
        else:
            await msg.term()
    except Exception as e:  # noqa: BLE001 - see docstring
        log.warning("bus: could not %s a message on %s: %r", how, msg.subject, e)


# Where a delivery's reply subject says how many times it was delivered:
# ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>``
# (9 tokens), or with a domain and account hash after ``$JS.ACK`` (11 or more).
_V1_TOKENS = 9
_V1_DELIVERED = 4
_V2_MIN_TOKENS = 11
_V2_DELIVERED = 6


def num_delivered(msg: Any) -> int:
    """How many times JetStream delivered ``msg`` (1 for its first delivery,
    and for a message that did not come from JetStream).

    Read from the one token of the reply subject that holds it: every input
    asks, and nats-py's ``msg.metadata`` parses all of the subject into
    objects (a datetime among them), several times the cost."""
    reply = getattr(msg, "reply", None)
    if isinstance(reply, str) and reply.startswith(_ACK_PREFIX):
        tokens = reply.split(".")
        at = (
            _V1_DELIVERED
            if len(tokens) == _V1_TOKENS
            else _V2_DELIVERED
            if len(tokens) >= _V2_MIN_TOKENS
            else None
        )
        if at is not None and tokens[at].isdigit():
            return int(tokens[at])
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # noqa: BLE001 - a core message has no delivery metadata
        return 1


class KeepAlive:
    """Tells JetStream, every ``every_s``, that ``msg`` is still being worked
    on, so that work longer than the consumer's ack_wait is not handed to
    someone else while it runs (it still is when the process dies). A timer,
    not a task: most work ends before the first tick. ``every_s`` must be
    below the consumer's ack_wait."""

    __slots__ = ("_every_s", "_msg", "_timer")

    def __init__(self, msg: Msg, every_s: float) -> None:
        self._msg = msg
        self._every_s = every_s
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            every_s, self._tick
        )

    def _tick(self) -> None:
        if self._timer is None or getattr(self._msg, "is_acked", False):
            return
        ping = asyncio.ensure_future(self._ping())
        _pings.add(ping)
        ping.add_done_callback(_pings.discard)
        self._timer = asyncio.get_running_loop().call_later(self._every_s, self._tick)

    async def _ping(self) -> None:
        try:
            await self._msg.in_progress()
        except Exception as e:  # noqa: BLE001 - the next tick tries again
            log.debug("bus: in-progress for %s failed: %r", self._msg.subject, e)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
