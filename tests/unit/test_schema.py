"""The wire types refuse what a drifting producer would send."""

import msgspec
import pytest
from thaw_core import schema

NodeOrError = schema.decoder(schema.NodeHeartbeat | schema.ErrorEvent)


def test_round_trip_keeps_the_tag() -> None:
    hb = schema.NodeHeartbeat(node_id="n1", cores=2, memory_mb=1024)
    raw = schema.encode(hb)
    assert b'"type":"node_heartbeat"' in raw
    assert NodeOrError.decode(raw) == hb


def test_union_dispatches_on_the_tag() -> None:
    err = schema.ErrorEvent(service="s", subject="x", code="malformed", error="bad")
    match NodeOrError.decode(schema.encode(err)):
        case schema.ErrorEvent(code=code):
            assert code == "malformed"
        case other:
            pytest.fail(f"decoded as {other!r}")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"node_heartbeat","node_id":"n1","cores":2,"memory_mb":1,"extra":1}',
        b'{"type":"nope","node_id":"n1"}',
        b'{"node_id":"n1","cores":2,"memory_mb":1}',
        b'{"type":"node_heartbeat","node_id":"n1","cores":"two","memory_mb":1}',
        b"not json",
    ],
)
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        NodeOrError.decode(raw)


def test_wire_types_are_frozen() -> None:
    hb = schema.NodeHeartbeat(node_id="n1", cores=2, memory_mb=1024)
    with pytest.raises(AttributeError):
        hb.cores = 3  # type: ignore[misc]
