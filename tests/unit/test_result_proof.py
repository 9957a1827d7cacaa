"""The proof a Result carries (thaw_core.result_proof): made under the call's
key, it verifies; any field changed, another key, another call, no key or no
proof, and it does not."""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Any

import msgspec
import pytest
from thaw_core.api import CallResult
from thaw_core.result_proof import (
    KeySeed,
    Mac,
    call_result_verifies,
    derive_call_id,
    derive_key,
    new_key,
    newest_verified,
    proof_of,
    result_msg_id,
    signed,
    signed_with_msg_id,
    verified,
    verifies,
)
from thaw_core.schema import PayloadRef, Result, encode

KEY = bytes(range(32))
RESULT = Result(
    call_id="fc-0123",
    status="success",
    codec="pickle",
    value=b"\x80\x05K\x07.",
    exc=b"",
    error="",
    traceback="",
    attempts=2,
    map_id="fm-9",
    index=3,
    container_id="ct-1",
    started_at=1733000000.25,
    finished_at=1733000001.5,
)
# Another value for every field the proof covers.
TAMPERED: dict[str, Any] = {
    "call_id": "fc-0124",
    "status": "failure",
    "codec": "json",
    "value": b"\x80\x05K\x08.",
    "exc": b"x",
    "error": "oops",
    "traceback": "Traceback",
    "attempts": 1,
    "map_id": "fm-8",
    "index": 4,
    "container_id": "ct-2",
    "started_at": 1733000000.5,
    "finished_at": 1733000001.25,
    # A value kept in the blob store: the proof covers its sha256.
    "value_ref": PayloadRef(sha256="ab" * 32, size=5, hour=481000),
}


def test_every_field_but_the_proof_is_covered() -> None:
    covered = set(TAMPERED)
    fields = set(Result.__struct_fields__) - {"type", "proof"}
    assert covered == fields


def test_a_signed_result_verifies_and_survives_the_wire() -> None:
    result = signed(KEY, RESULT)
    assert len(result.proof) == 32 and verifies(KEY, result)
    assert verified(KEY, RESULT.call_id, encode(result)) == result


@pytest.mark.parametrize("field", sorted(TAMPERED))
def test_tampering_with_any_field_is_rejected(field: str) -> None:
    result = signed(KEY, RESULT)
    forged = msgspec.structs.replace(result, **{field: TAMPERED[field]})
    assert not verifies(KEY, forged)


def test_another_key_a_missing_proof_or_no_key_is_rejected() -> None:
    result = signed(KEY, RESULT)
    assert not verifies(new_key(), result)
    assert not verifies(KEY, msgspec.structs.replace(result, proof=b""))
    assert not verifies(KEY, msgspec.structs.replace(result, proof=result.proof[:-1] + b"\0"))
    assert not verifies(b"", result)
    assert signed(b"", RESULT).proof == b""  # nothing to sign with: no proof


def test_verified_refuses_malformed_and_other_calls_results() -> None:
    data = encode(signed(KEY, RESULT))
    assert verified(KEY, "fc-other", data) is None
    assert verified(KEY, RESULT.call_id, b"not json") is None
    assert verified(KEY, RESULT.call_id, b'{"type": "result"}') is None


def test_the_newest_result_that_verifies_wins_over_newer_forgeries() -> None:
    first = signed(KEY, RESULT)
    second = signed(KEY, msgspec.structs.replace(RESULT, attempts=3))
    forged = msgspec.structs.replace(RESULT, value=b"evil", proof=b"\0" * 32)
    stored = [encode(forged), encode(first), encode(second), encode(forged), b"junk"]
    assert newest_verified(KEY, RESULT.call_id, stored) == second
    assert newest_verified(KEY, RESULT.call_id, [encode(forged)]) is None


def test_the_canonical_bytes_are_as_documented() -> None:
    """What another language computes, spelled out independently of the module."""

    def text(s: str) -> bytes:
        return struct.pack(">I", len(s.encode())) + s.encode()

    r = RESULT
    message = (
        b"thaw.result.v1"
        + text(r.call_id) + text(r.status) + text(r.codec)
        + hashlib.sha256(r.value).digest() + hashlib.sha256(r.exc).digest()
        + text(r.error) + text(r.traceback)
        + struct.pack(">q", r.attempts) + text(r.map_id) + struct.pack(">q", r.index)
        + text(r.container_id) + struct.pack(">d", r.started_at) + struct.pack(">d", r.finished_at)
    )  # fmt: skip
    assert proof_of(KEY, r) == hmac.new(KEY, message, "sha256").digest()


def test_derived_keys_and_msg_ids() -> None:
    seed = b"s" * 32
    assert derive_key(seed, "fc-1") == derive_key(seed, "fc-1") != derive_key(seed, "fc-2")
    assert len(derive_key(seed, "fc-1")) == 32
    assert new_key() != new_key()
    # Real results share one msg-id that a forger without the key cannot know.
    assert result_msg_id(KEY, "fc-1") == result_msg_id(KEY, "fc-1")
    assert result_msg_id(KEY, "fc-1").startswith("fc-1.")
    assert result_msg_id(new_key(), "fc-1") != result_msg_id(KEY, "fc-1")
    assert result_msg_id(b"", "fc-1") == "fc-1"


@pytest.mark.parametrize("key_len", [0, 1, 32, 63, 64, 65, 200])
def test_the_keyed_mac_is_hmac_sha256(key_len: int) -> None:
    """Mac (pads hashed once) computes exactly the standard HMAC, for keys
    shorter than, as long as and longer than SHA-256's block, and reused."""
    key = bytes(range(key_len % 256)) * (key_len // 256 + 1)
    key = key[:key_len]
    mac = Mac(key)
    for message in (b"", b"x", bytes(range(256)) * 3):
        assert mac.digest(message) == hmac.digest(key, message, "sha256")


def test_derivations_are_as_documented() -> None:
    """Call ids, call keys and msg-ids, spelled out with the standard HMAC
    (what another language computes)."""
    seed, request_key = b"s" * 32, b"r" * 16
    sha = "sha256"
    key = hmac.digest(seed, b"thaw.call-key.v1\0fc-1", sha)
    assert derive_key(seed, "fc-1") == KeySeed(seed).key("fc-1") == key
    call_id = "fc-" + hmac.digest(seed, b"thaw.call-id.v1\0" + request_key + (7).to_bytes(8, "big"), sha).hex()[:32]  # fmt: skip
    assert derive_call_id(seed, request_key, 7) == KeySeed(seed).call_id(request_key, 7) == call_id
    tag = hmac.digest(KEY, b"thaw.result-msg-id.v1", sha).hex()[:16]
    assert result_msg_id(KEY, "fc-1") == f"fc-1.{tag}"


def test_signed_with_msg_id_is_signed_and_result_msg_id() -> None:
    assert signed_with_msg_id(KEY, RESULT) == (
        signed(KEY, RESULT),
        result_msg_id(KEY, RESULT.call_id),
    )
    assert signed_with_msg_id(b"", RESULT) == (RESULT, RESULT.call_id)


def test_a_result_relayed_over_http_verifies_as_the_sdk_checks_it() -> None:
    r = signed(KEY, RESULT)
    relayed = CallResult(
        call_id=r.call_id, status=r.status, codec=r.codec, value_b64=r.value, exc=r.exc,
        error=r.error, traceback=r.traceback, attempts=r.attempts, map_id=r.map_id,
        index=r.index, container_id=r.container_id, started_at=r.started_at,
        finished_at=r.finished_at, proof=r.proof,
    )  # fmt: skip
    wire = msgspec.json.decode(msgspec.json.encode(relayed), type=CallResult)
    assert call_result_verifies(KEY, wire)
    assert not call_result_verifies(KEY, msgspec.structs.replace(wire, value_b64=b"evil"))
    assert not call_result_verifies(new_key(), wire)


async def test_a_refused_inputs_key_is_not_in_its_log_or_error_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    from thaw_core.refusal import reject
    from thaw_core.schema import ErrorEvent, Invoke

    published: list[ErrorEvent] = []

    class Bus:
        async def publish(self, subject: str, event: ErrorEvent) -> None:
            published.append(event)

    key = new_key()
    data = encode(Invoke(call_id="fc-1", app="a", function="f", key=key))
    b64 = msgspec.json.encode(key).decode().strip('"')
    with caplog.at_level(logging.WARNING):
        await reject(
            Bus(), "agent", logging.getLogger("t"), "thaw.invoke.a.f", data, "malformed", "x"
        )  # type: ignore[arg-type]
    (event,) = published
    assert '"key":"<redacted>' in event.payload_preview
    assert b64 not in event.payload_preview and b64 not in caplog.text


def test_an_offloaded_value_has_the_proof_it_would_have_inline() -> None:
    """The proof covers the value's sha256 wherever the value is: kept in the
    blob store, the result verifies only with the digest of the same bytes."""
    inline = signed(KEY, RESULT)
    ref = PayloadRef(sha256=hashlib.sha256(RESULT.value).hexdigest(), size=5, hour=481000)
    offloaded = msgspec.structs.replace(inline, value=b"", value_ref=ref)
    assert verifies(KEY, offloaded)
    other = msgspec.structs.replace(ref, sha256=hashlib.sha256(b"other").hexdigest())
    assert not verifies(KEY, msgspec.structs.replace(offloaded, value_ref=other))
