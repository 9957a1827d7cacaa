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
``exc`` as the 32-byte SHA-256 of their bytes (for a value kept in the blob
store, ``value_ref.sha256``: the same digest, so an offloaded result's proof
is the one it would have inline, and covers the bytes a reader fetches), integers as 8-byte big-endian
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
from typing import TYPE_CHECKING

import msgspec

from thaw_core.api import CallResult
from thaw_core.contract import result_subject
from thaw_core.schema import Result

if TYPE_CHECKING:
    # Only a type here: the SDK (and so every container's runtime) imports
    # this module, and the bus loads nats and aiohttp.
    from thaw_core.bus import Bus

KEY_BYTES = 32
PROOF_VERSION = b"thaw.result.v1"
_KEY_LABEL = b"thaw.call-key.v1\0"
_MSG_ID_LABEL = b"thaw.result-msg-id.v1"
_MSG_ID_TAG_HEX = 16
_CALL_ID_LABEL = b"thaw.call-id.v1\0"
# A derived call id's length in hex digits, as the gateway's own ("fc-<32 hex>").
_CALL_ID_HEX = 32

_result_decoder = msgspec.json.Decoder(Result)


def new_key() -> bytes:
    """A fresh per-call key."""
    return os.urandom(KEY_BYTES)


_BLOCK = 64  # SHA-256's block, which HMAC pads its key to
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


class Mac:
    """HMAC-SHA256 (RFC 2104) under one key, with its two padded keys hashed
    once. Each message then costs two copies of a hash state, where a one-shot
    ``hmac.digest`` sets up OpenSSL's keyed context again (most of a short
    message's cost; every input takes several MACs, in the gateway, the agent
    and the SDK, so this is per-input CPU)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class KeySeed:
    """A caller's secret seed, keyed once: what it derives for many calls
    (their ids and result keys) costs no keyed set-up each."""

    __slots__ = ("_mac", "seed")

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self._mac = Mac(seed)

    def key(self, call_id: str) -> bytes:
        """The key of ``call_id``: a client sends one seed for many calls (a
        batch's call ids are made by the gateway) and can still verify each
        call's result itself."""
        return self._mac.digest(_KEY_LABEL + call_id.encode())

    def call_id(self, request_key: bytes, index: int = 0) -> str:
        """The id of item ``index`` of the request a caller marked
        ``request_key``: the caller knows its call ids before any answer, and
        a request sent again (the answer was lost with the gateway) names the
        same calls, so they are taken once. Nobody without the seed can make,
        and so take over, such an id."""
        digest = self._mac.digest(_CALL_ID_LABEL + request_key + index.to_bytes(8, "big"))
        return "fc-" + digest.hex()[:_CALL_ID_HEX]


def derive_key(seed: bytes, call_id: str) -> bytes:
    """The key of ``call_id`` made from a caller's ``seed`` (``KeySeed.key``)."""
    return KeySeed(seed).key(call_id)


def derive_call_id(seed: bytes, request_key: bytes, index: int = 0) -> str:
    """The id of item ``index`` of the request marked ``request_key``, made
    from the caller's secret ``seed`` (``KeySeed.call_id``)."""
    return KeySeed(seed).call_id(request_key, index)


_EMPTY_SHA256 = hashlib.sha256(b"").digest()
_INT = struct.Struct(">q")
# A string's length, before its UTF-8 bytes.
_LEN = struct.Struct(">I").pack
_TIMES = struct.Struct(">dd")


def _sha256(b: bytes) -> bytes:
    # Most results have no exc, and many no value: those hash the same.
    return hashlib.sha256(b).digest() if b else _EMPTY_SHA256


def _value_digest(r: Result | CallResult, value: bytes) -> bytes:
    """The sha256 of the value, wherever it is kept (a large one's is its ref's)."""
    if r.value_ref is not None:
        return bytes.fromhex(r.value_ref.sha256)
    return _sha256(value)


def canonical(result: Result) -> bytes:
    """The bytes the proof covers: every field of ``result`` but the proof."""
    return _canonical(result, result.value)


def _canonical(r: Result | CallResult, value: bytes) -> bytes:
    # ``r``: a Result, or a CallResult relayed over HTTP (the same fields by
    # the same names, the value as ``value_b64``), read without a copy.
    # Written out, without a helper per string: every input's result is
    # signed once and checked twice (gateway, SDK), and those calls were
    # most of what this costs.
    call_id, status, codec = r.call_id.encode(), r.status.encode(), r.codec.encode()
    error, traceback = r.error.encode(), r.traceback.encode()
    map_id, container_id = r.map_id.encode(), r.container_id.encode()
    return b"".join(
        (
            PROOF_VERSION,
            _LEN(len(call_id)),
            call_id,
            _LEN(len(status)),
            status,
            _LEN(len(codec)),
            codec,
            _value_digest(r, value),
            _sha256(r.exc),
            _LEN(len(error)),
            error,
            _LEN(len(traceback)),
            traceback,
            _INT.pack(r.attempts),
            _LEN(len(map_id)),
            map_id,
            _INT.pack(r.index),
            _LEN(len(container_id)),
            container_id,
            _TIMES.pack(r.started_at, r.finished_at),
        )
    )


def proof_of(key: bytes, result: Result) -> bytes:
    return Mac(key).digest(canonical(result))


def signed(key: bytes, result: Result) -> Result:
    """``result`` with its proof under ``key`` (no proof without a key: a
    raw bus client that sent none gets an unsigned result)."""
    if not key:
        return result
    return msgspec.structs.replace(result, proof=proof_of(key, result))


def signed_with_msg_id(key: bytes, result: Result) -> tuple[Result, str]:
    """``signed`` and ``result_msg_id`` at once, keying one MAC for both: what
    an agent does with every result."""
    if not key:
        return result, result.call_id
    mac = Mac(key)
    proof = mac.digest(canonical(result))
    return msgspec.structs.replace(result, proof=proof), _msg_id(mac, result.call_id)


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
    """Whether a pickle-codec result relayed over HTTP carries a valid proof
    under ``key`` (the proof of ``from_call_result(r)``, computed without it)."""
    if r.codec != "pickle" or not key or not r.proof:
        return False
    return hmac.compare_digest(r.proof, Mac(key).digest(_canonical(r, r.value_b64)))


def _msg_id(mac: Mac, call_id: str) -> str:
    return f"{call_id}.{mac.digest(_MSG_ID_LABEL).hex()[:_MSG_ID_TAG_HEX]}"


def result_msg_id(key: bytes, call_id: str) -> str:
    """The JetStream msg-id of every real result of ``call_id``."""
    if not key:
        return call_id
    return _msg_id(Mac(key), call_id)


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
