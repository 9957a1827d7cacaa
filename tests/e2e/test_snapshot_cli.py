"""`thaw snapshot list | rm` through a real gateway, with the snapshots service
running as a real process beside it. The catalog is filled the way agents
fill it: a lookup that claims, a blob in the platform's S3 store, then
SnapshotCreated and SnapshotRestored events on the bus."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats.errors
import pytest
from fixtures.platform import Platform
from fixtures.wait import eventually
from thaw_core.blob import BlobStore, open_blob_store
from thaw_core.bus import Bus
from thaw_core.fingerprint import fingerprint_id, load_fingerprint
from thaw_core.schema import (
    Fingerprint,
    HealthReply,
    SnapshotCreated,
    SnapshotInfo,
    SnapshotLookup,
    SnapshotLookupReply,
    SnapshotRestored,
    decoder,
)

FINGERPRINTS = Path(__file__).parent.parent / "data" / "fingerprints"
HERE = load_fingerprint(FINGERPRINTS / "this-machine-amd-epyc-vm.json")
ARM = load_fingerprint(FINGERPRINTS / "arm64-graviton3.json")

# Wide enough that the snapshot table never wraps or truncates an id.
WIDE = {"COLUMNS": "200"}

_reply = decoder(SnapshotLookupReply)
_health = decoder(HealthReply)


@pytest.fixture(scope="module")
async def snapshots_bus(platform: Platform) -> AsyncIterator[Bus]:
    """The snapshots service running beside the platform (GC every 0.3 s), and
    a bus connection of the agents' side."""
    if "snapshots" not in platform.procs:
        platform._spawn("snapshots", THAW_SNAPSHOTS_GC_INTERVAL_S="0.3")
    bus = await Bus.connect(platform.base_env["THAW_NATS_URL"], name="snapshot-cli-test")

    async def healthy() -> bool:
        try:
            reply = await bus.request("thaw.health.snapshots", b"", timeout_s=2)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return False
        return _health.decode(reply.data).status == "ok"

    await eventually(
        healthy, 30, "the snapshots service to start", every_s=0.2, context=platform.logs
    )
    try:
        yield bus
    finally:
        await bus.close(grace_s=1)


@pytest.fixture(scope="module")
async def blobs(platform: Platform) -> AsyncIterator[BlobStore]:
    store = open_blob_store(platform.base_env["THAW_BLOB_URL"])
    try:
        yield store
    finally:
        await store.close()


async def make_snapshot(
    bus: Bus, blobs: BlobStore, app: str, function: str, fp: Fingerprint, node: str
) -> SnapshotInfo:
    """An agent's part: claim, store the image, say it is made."""
    lookup = SnapshotLookup(app=app, function=function, version=1, node_id=node, fingerprint=fp)
    claim = _reply.decode((await bus.request("thaw.snapshots.lookup", lookup, timeout_s=5)).data).claim
    assert claim is not None
    data = os.urandom(4096)
    sha = hashlib.sha256(data).hexdigest()
    await blobs.put(claim.blob_key, data, sha256=sha)
    made = msgspec.structs.replace(claim, size=len(data), sha256=sha, state="ready")
    await bus.publish(f"thaw.event.snapshot.{app}", SnapshotCreated(snapshot=made))
    return made


async def test_snapshot_list_and_rm(platform: Platform, snapshots_bus: Bus, blobs: BlobStore) -> None:
    app = f"snapcli-{uuid.uuid4().hex[:8]}"
    embedder = await make_snapshot(snapshots_bus, blobs, app, "Embedder", HERE, "node-x86")
    ranker = await make_snapshot(snapshots_bus, blobs, app, "rank", ARM, "node-arm")
    for _ in range(3):
        await snapshots_bus.publish(
            f"thaw.event.snapshot.{app}",
            SnapshotRestored(snapshot_id=embedder.snapshot_id, node_id="node-x86", ok=True),
        )

    def listed() -> str | None:
        out = platform.cli("snapshot", "list", "--app", app, env=WIDE)
        assert out.returncode == 0, out.stdout + out.stderr
        lines = [line.split() for line in out.stdout.splitlines()]
        rows = {line[0]: line for line in lines if line and line[0].startswith("sn-")}
        emb = rows.get(embedder.snapshot_id)
        if emb is None or ranker.snapshot_id not in rows or emb[-1] != "ready" or emb[-2] != "3":
            return None
        return out.stdout

    table = await eventually(
        lambda: asyncio.to_thread(listed), 20, "both snapshots listed", every_s=0.2
    )
    assert fingerprint_id(HERE)[:12] in table and fingerprint_id(ARM)[:12] in table
    assert "Embedder" in table and "rank" in table and "4.0 KiB" in table
    # Another app's filter does not show them; the API lists them with full ids.
    elsewhere = platform.cli("snapshot", "list", "--app", "nope", env=WIDE)
    assert embedder.snapshot_id not in elsewhere.stdout
    status, body = platform.request(f"/v1/snapshots?app={app}", "GET")
    assert status == 200
    by_id = {s["snapshot_id"]: s for s in body}
    assert by_id[embedder.snapshot_id]["fingerprint_id"] == fingerprint_id(HERE)
    assert by_id[embedder.snapshot_id]["restores"] == 3

    out = platform.cli("snapshot", "rm", embedder.snapshot_id, env=WIDE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "retired" in out.stdout

    def removed() -> bool:
        status, body = platform.request(f"/v1/snapshots?app={app}", "GET")
        ids = {s["snapshot_id"] for s in body}
        return status == 200 and embedder.snapshot_id not in ids and ranker.snapshot_id in ids

    # GC deleted the row (within one GC interval: 0.3 s here, 30 s by default)...
    await eventually(lambda: asyncio.to_thread(removed), 45, "the row gone", every_s=0.2)
    assert not await blobs.exists(embedder.blob_key)  # ...after its blob
    assert await blobs.exists(ranker.blob_key)

    # A retired snapshot is no longer restored: the next x86 lookup claims anew.
    lookup = SnapshotLookup(app=app, function="Embedder", version=1, node_id="n", fingerprint=HERE)
    reply = _reply.decode((await snapshots_bus.request("thaw.snapshots.lookup", lookup)).data)
    assert reply.snapshot is None and reply.claim is not None


def test_snapshot_rm_of_an_unknown_id_and_bad_filters_fail_clearly(platform: Platform) -> None:
    out = platform.cli("snapshot", "rm", "sn-doesnotexist", env=WIDE)
    assert out.returncode == 1
    assert "no snapshot 'sn-doesnotexist'" in out.stderr
    status, body = platform.request("/v1/snapshots?app=bad.name", "GET")
    assert status == 400 and body["error"]["code"] == "bad_request"
    status, body = platform.request("/v1/snapshots/bad%20id", "DELETE")
    assert status == 400
