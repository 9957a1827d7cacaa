"""The bus: NATS core for request/reply, JetStream for everything that must
survive a crash. Services talk to NATS only through ``Bus``.

Streams (``STREAMS``; ``Bus.provision`` creates or updates them, idempotently):

=========  ==================  ===========  ===========================================
stream     subjects            retention    what
=========  ==================  ===========  ===========================================
INVOKE     ``thaw.invoke.>``   workqueue    inputs, ``thaw.invoke.<app>.<fn>``; one
                                            durable pull consumer per function, which
                                            agents pull from for their free slots
RESULTS    ``thaw.result.>``   limits, 24h  ``thaw.result.<call_id>``, signed and
                                            published with the call's keyed msg-id
                                            (``result_proof.result_msg_id``) so a
                                            redelivered input never stores two results
EVENTS     ``thaw.event.>``    limits, 1h   heartbeats, errors, state changes
LOGS       ``thaw.logs.>``     limits, 24h  container stdout/stderr
BUILD      ``thaw.build.>``    limits, 24h  image build requests and progress
=========  ==================  ===========  ===========================================

Plain NATS subjects (not persisted) carry request/reply such as
``thaw.health.<service>``: see ``Bus.request`` / ``Bus.serve``.

Delivery semantics
------------------
JetStream delivery is **at-least-once**. ``Bus.consume`` acks an input only
when its handler returns, so a handler must store its result (publish to
RESULTS, write to Postgres) *before* returning. An agent that dies mid-call
leaves the input unacked and JetStream redelivers it after the consumer's
``ack_wait`` — to another agent if one pulls first. Handlers therefore must be
idempotent; results are keyed by call id and deduplicated with
``Nats-Msg-Id`` (``publish(..., msg_id=...)``, within the stream's
``duplicate_window``), so a second execution never shows a client a second
result. A handler that raises naks with a 1 s delay (redelivery without a hot
loop); ``max_deliver`` on the consumer bounds how often that repeats.

Long calls must keep their message alive more often than ``ack_wait``
(``KeepAlive``, or ``in_progress_every_s`` for ``consume``); otherwise
JetStream assumes the worker died and hands the input to someone else while
it still runs. ``settle`` acks, naks or terms a delivery exactly once.

- ``connection``: ``Bus``, the connection, core NATS (request/reply, subscribe);
- ``jetstream``: streams and consumers, what they store, publishing into them;
- ``pull``: the pull loops (``consume``, ``pull``);
- ``delivery``: one delivery: ``settle``, ``num_delivered``, ``KeepAlive``.

Every publish carries the caller's OpenTelemetry context in its headers
(W3C ``traceparent``), and every consumed or served message is handled inside
the context extracted from them, so one trace follows a call across services.
"""

from __future__ import annotations

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import PubAck

from thaw_core.bus.connection import ERROR_CODE_HEADER, ERROR_HEADER, Bus, BusRequestError
from thaw_core.bus.delivery import KeepAlive, Settle, num_delivered, settle, trace_context
from thaw_core.bus.jetstream import BatchPublishError, ConsumerState, StoredMsg, refusal
from thaw_core.bus.pull import Handler
from thaw_core.contract import STREAMS, ConsumerSpec, StreamSpec

__all__ = [
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "STREAMS",
    "BatchPublishError",
    "Bus",
    "BusRequestError",
    "ConsumerSpec",
    "ConsumerState",
    "Handler",
    "KeepAlive",
    "Msg",
    "PubAck",
    "Settle",
    "StoredMsg",
    "StreamSpec",
    "Subscription",
    "num_delivered",
    "refusal",
    "settle",
    "trace_context",
]
