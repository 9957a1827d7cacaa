"""Large Dict values and Queue items left behind (a key overwritten, an item
taken) are deleted from the blob store, on real NATS JetStream: only after
two sweeps found nothing referring to them, never while a key or a stored
item still does."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

from thaw_core import contract
from thaw_core.blob import LocalBlobStore
from thaw_core.bus import Bus
from thaw_gateway.store_values_gc import StoreValueSweeper, referred_blob


def ref(sha: str, size: int) -> bytes:
    return contract.STORE_BLOB_REF + json.dumps({"blob": sha, "size": size}).encode()


async def stored_value(blob: LocalBlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    await blob.put(contract.store_value_key(sha), data, sha256=sha)
    return sha


async def test_only_blobs_nothing_refers_to_go_and_only_after_two_sweeps(bus: Bus, tmp_path: Path) -> None:
    blob = LocalBlobStore(tmp_path / "blobs")
    name = uuid.uuid4().hex[:8]
    in_dict, in_queue, orphan = [await stored_value(blob, n.encode() * 1000) for n in "abc"]
    bucket = contract.dict_bucket(f"gc-{name}")
    await bus.kv_ensure(bucket, create=True)
    await bus.kv_put(bucket, "s.kept", ref(in_dict, 1000))
    await bus.kv_put(bucket, "s.inline", b'"small"')
    stream = contract.queue_stream(f"gc-{name}")
    await bus.stream_ensure(stream, create=True)
    await bus.stream_put(contract.queue_subject(f"gc-{name}", "p1"), [b"1", ref(in_queue, 1000)])

    sweeper = StoreValueSweeper(blob, bus)
    assert await sweeper.referred() >= {in_dict, in_queue}
    assert await sweeper.sweep() == 0  # the orphan is a suspect, not yet garbage
    assert await blob.exists(contract.store_value_key(orphan))
    assert await sweeper.sweep() == 1
    assert not await blob.exists(contract.store_value_key(orphan))
    for kept in (in_dict, in_queue):
        assert await blob.exists(contract.store_value_key(kept))

    # The key overwritten inline: its old blob goes two sweeps later.
    await bus.kv_put(bucket, "s.kept", b'"now small"')
    await bus.stream_purge(stream.name)
    assert await sweeper.sweep() == 0
    assert await sweeper.sweep() == 2
    assert await blob.list(contract.STORE_VALUES_PREFIX) == []


def test_a_value_that_only_looks_like_a_reference_refers_to_nothing() -> None:
    assert referred_blob(b'"text"') is None
    assert referred_blob(contract.STORE_BLOB_REF + b"not json") is None
    assert referred_blob(contract.STORE_BLOB_REF + b'{"blob": 3}') is None
    assert referred_blob(ref("ab" * 32, 1)) == "ab" * 32
