"""Proof that a ``Result`` was made by the platform for its input.

Whoever makes an ``Invoke`` gives it a random per-call key (``Invoke.key``):
the gateway for HTTP and SDK calls, the cron service for a schedule's fire, a
client of another language for the invokes it publishes. The agent that runs
the input signs its ``Result`` with that key (``Result.proof``), and every
reader of results (gateway, SDK, agent) accepts only a result whose proof
verifies. A process that can publish on ``thaw.result.*`` but never saw the
input (the key travels only on INVOKE, which only agents read) cannot make a
result anyone accepts.

The proof is HMAC-SHA256 under the key of these canonical bytes, so that any
language can compute it: ``b"thaw.result.v1"``, then each field in this order
-- strings as a 4-byte big-endian length and their UTF-8 bytes, ``value`` and
``exc`` as the 32-byte SHA-256 of their bytes, integers as 8-byte big-endian
signed, floats as 8-byte big-endian IEEE 754 doubles:

    call_id, status, codec, sha256(value), sha256(exc), error, traceback,
    attempts, map_id, index, container_id, started_at, finished_at

Every real result of a call is published under one msg-id,
``<call_id>.<tag>`` with ``tag`` made from the key (``result_msg_id``): a
forger, lacking the key, cannot know it, so a forged result never takes the
real one's deduplication slot, while the real result, a redelivered input's
second one and the gateway's "cancelled" still deduplicate against each other.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Iterable

import msgspec

from thaw_core.api import CallResult
from thaw_core.bus import Bus
from thaw_core.contract import result_subject
from thaw_core.schema import Result

KEY_BYTES = 32
PROOF_VERSION = b"thaw.result.v1"
_KEY_LABEL = b"thaw.call-key.v1\0"
_MSG_ID_LABEL = b"thaw.result-msg-id.v1"
_MSG_ID_TAG_HEX = 16

_result_decoder = msgspec.json.Decoder(Result)


def new_key() -> bytes:
    """A fresh per-call key."""
    return os.urandom(KEY_BYTES)


def derive_key(seed: bytes, call_id: str) -> bytes:
    """The key of ``call_id`` made from a caller's ``seed``: a client sends
    one seed for many calls (a batch's call ids are made by the gateway) and
    can still verify each call's result itself."""
    return hmac.digest(seed, _KEY_LABEL + call_id.encode(), "sha256")


def _text(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">I", len(b)) + b


def canonical(result: Result) -> bytes:
    """The bytes the proof covers: every field of ``result`` but the proof."""
    return b"".join(
        (
            PROOF_VERSION,
            _text(result.call_id),
            _text(result.status),
            _text(result.codec),
            hashlib.sha256(result.value).digest(),
            hashlib.sha256(result.exc).digest(),
            _text(result.error),
            _text(result.traceback),
            struct.pack(">q", result.attempts),
            _text(result.map_id),
            struct.pack(">q", result.index),
            _text(result.container_id),
            struct.pack(">dd", result.started_at, result.finished_at),
        )
    )


def proof_of(key: bytes, result: Result) -> bytes:
    return hmac.digest(key, canonical(result), "sha256")


def signed(key: bytes, result: Result) -> Result:
    """``result`` with its proof under ``key`` (no proof without a key: a
    raw bus client that sent none gets an unsigned result)."""
    if not key:
        return result
    return msgspec.structs.replace(result, proof=proof_of(key, result))


def verifies(key: bytes, result: Result) -> bool:
    """Whether ``result`` carries a valid proof under ``key`` (never with no key)."""
    if not key or not result.proof:
        return False
    return hmac.compare_digest(result.proof, proof_of(key, result))


def from_call_result(r: CallResult) -> Result:
    """The ``Result`` a result relayed over HTTP stands for (exactly, for the
    pickle codec's value, which the gateway passes through unchanged): the
    same fields by the same names, the value as ``value_b64``."""
    fields = msgspec.structs.asdict(r)
    del fields["value"]
    fields["value"] = fields.pop("value_b64")
    return Result(**fields)


def call_result_verifies(key: bytes, r: CallResult) -> bool:
    """Whether a pickle-codec result relayed over HTTP carries a valid proof under ``key``."""
    return r.codec == "pickle" and verifies(key, from_call_result(r))


def result_msg_id(key: bytes, call_id: str) -> str:
    """The JetStream msg-id of every real result of ``call_id``."""
    if not key:
        return call_id
    tag = hmac.digest(key, _MSG_ID_LABEL, "sha256").hex()[:_MSG_ID_TAG_HEX]
    return f"{call_id}.{tag}"


def verified(key: bytes, call_id: str, data: bytes) -> Result | None:
    """The result ``data`` holds when it is one of ``call_id``'s and its proof
    verifies; None for anything else (malformed, another call's, forged)."""
    try:
        result = _result_decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if result.call_id != call_id or not verifies(key, result):
        return None
    return result


def newest_verified(key: bytes, call_id: str, stored: Iterable[bytes]) -> Result | None:
    """Of the payloads stored for ``call_id`` (oldest first), the newest whose
    proof verifies."""
    found = None
    for data in stored:
        found = verified(key, call_id, data) or found
    return found


async def stored_result(bus: Bus, call_id: str, key: bytes) -> Result | None:
    """The newest result of ``call_id`` in RESULTS whose proof verifies under
    ``key``: the last one stored, unless that one is forged (or malformed)."""
    subject = result_subject(call_id)
    last = await bus.last(subject)
    if last is None:
        return None
    found = verified(key, call_id, last)
    if found is not None:
        return found
    return newest_verified(key, call_id, await bus.stored_on(subject))
