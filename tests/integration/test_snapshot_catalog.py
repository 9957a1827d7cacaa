"""The snapshots service in-process against a real nats-server (one of the
test's own: durable consumers and the EVENTS stream are per server), real
Postgres and a blob store: lookups and claims, the agents' lifecycle events,
app events, GC and refused messages, as an agent and the gateway see them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fixtures.nats import NatsServer
from fixtures.wait import eventually
from thaw_core.bus import Bus, BusRequestError
from thaw_core.config import Settings
from thaw_core.db import Database
from thaw_core.fingerprint import fingerprint_id, load_fingerprint
from thaw_core.schema import (
    AppEvent,
    ErrorEvent,
    Fingerprint,
    SnapshotCreated,
    SnapshotCreateFailed,
    SnapshotInfo,
    SnapshotLookup,
    SnapshotLookupReply,
    SnapshotRestored,
    decoder,
    encode,
)
from thaw_snapshots.catalog import Policy
from thaw_snapshots.service import LOOKUP_SUBJECT, SnapshotsService

FINGERPRINTS = Path(__file__).parent.parent / "data" / "fingerprints"
HERE = load_fingerprint(FINGERPRINTS / "this-machine-amd-epyc-vm.json")
BARE_METAL = load_fingerprint(FINGERPRINTS / "amd-epyc-9454-bare-metal.json")  # a superset
SUBSET = load_fingerprint(FINGERPRINTS / "amd-epyc-avx512-subset.json")  # lacks some AVX-512
ARM = load_fingerprint(FINGERPRINTS / "arm64-graviton3.json")

_reply = decoder(SnapshotLookupReply)
_error = decoder(ErrorEvent)


@pytest.fixture
async def make_settings(
    nats_server_factory: Callable[[], NatsServer],
    make_db: Callable[..., Awaitable[Database]],
    tmp_path: Path,
) -> Callable[[], Awaitable[Settings]]:
    async def make() -> Settings:
        nats = nats_server_factory()
        db = await make_db()
        dsn = db.dsn
        await db.close()
        blobs = tmp_path / f"blobs-{uuid.uuid4().hex[:6]}"
        blobs.mkdir()
        return Settings.from_env(
            {
                "THAW_STATE_DIR": str(tmp_path),
                "THAW_NATS_URL": nats.url,
                "THAW_DATABASE_URL": dsn,
                "THAW_BLOB_URL": f"file://{blobs}",
                "THAW_NODE_ID": "snapshots-test",
            }
        )

    return make


@contextlib.asynccontextmanager
async def running(settings: Settings, **kw: Any) -> AsyncIterator[SnapshotsService]:
    svc = SnapshotsService(settings, gc_interval_s=kw.pop("gc_interval_s", 0.2), **kw)
    async with svc:
        task = asyncio.create_task(svc.run())
        try:
            yield svc
        finally:
            await svc.shutdown(timeout_s=5)
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def svc(make_settings: Callable[[], Awaitable[Settings]]) -> AsyncIterator[SnapshotsService]:
    async with running(await make_settings()) as s:
        yield s


@pytest.fixture
async def agent(svc: SnapshotsService) -> AsyncIterator[Bus]:
    """A bus connection of the agents' side."""
    b = await Bus.connect(svc.settings.nats_url, name="snapshots-test-agent", connect_timeout_s=10)
    try:
        yield b
    finally:
        await b.close(grace_s=1)


async def lookup(
    bus: Bus, fp: Fingerprint, *, app: str = "embedder", function: str = "Embedder",
    version: int = 1, node: str = "node-a",
) -> SnapshotLookupReply:  # fmt: skip
    req = SnapshotLookup(app=app, function=function, version=version, node_id=node, fingerprint=fp)
    msg = await bus.request(LOOKUP_SUBJECT, req, timeout_s=5)
    return _reply.decode(msg.data)


async def make_snapshot(
    svc: SnapshotsService, bus: Bus, claim: SnapshotInfo, **fields: Any
) -> SnapshotInfo:
    """What an agent does with a claim: store the image, say it is made
    (with ``fields`` of SnapshotInfo as the agent measured them)."""
    assert svc.blob is not None
    data = os.urandom(4096)
    sha = hashlib.sha256(data).hexdigest()
    await svc.blob.put(claim.blob_key, data, sha256=sha)
    made = msgspec.structs.replace(claim, size=len(data), sha256=sha, state="ready", **fields)
    await bus.publish(f"thaw.event.snapshot.{claim.app}", SnapshotCreated(snapshot=made))
    return made


async def row(svc: SnapshotsService, snapshot_id: str) -> dict[str, Any] | None:
    assert svc.db is not None
    r = await svc.db.fetchrow("SELECT * FROM snapshots WHERE snapshot_id = $1", snapshot_id)
    return dict(r) if r is not None else None


async def ready_snapshot(
    svc: SnapshotsService, bus: Bus, cold_start_s: float = 0.0, **where: Any
) -> SnapshotInfo:
    reply = await lookup(bus, HERE, **where)
    assert reply.claim is not None and reply.snapshot is None
    made = await make_snapshot(svc, bus, reply.claim, cold_start_s=cold_start_s)

    async def handed_out() -> bool:
        return (await lookup(bus, HERE, **where)).snapshot is not None

    await eventually(handed_out)
    return made


# ---------------------------------------------------------------- lookups and claims


async def test_first_lookup_claims_and_concurrent_ones_get_neither(
    svc: SnapshotsService, agent: Bus
) -> None:
    replies = await asyncio.gather(*(lookup(agent, HERE, node=f"node-{i}") for i in range(8)))
    claims = [r.claim for r in replies if r.claim is not None]
    assert len(claims) == 1, replies
    assert all(r.snapshot is None for r in replies)
    claim = claims[0]
    assert claim.state == "creating" and claim.fingerprint_id == fingerprint_id(HERE)
    assert claim.fingerprint == HERE and claim.blob_key
    # Later lookups of that class, while it is being made: neither.
    again = await lookup(agent, HERE)
    assert again.snapshot is None and again.claim is None
    assert (await row(svc, claim.snapshot_id) or {})["claimed_by"].startswith("node-")


async def test_created_snapshot_goes_to_compatible_nodes_and_not_to_others(
    svc: SnapshotsService, agent: Bus
) -> None:
    made = await ready_snapshot(svc, agent)
    for node_fp in (HERE, BARE_METAL):  # the same class, and a node with more CPU flags
        reply = await lookup(agent, node_fp)
        assert reply.snapshot is not None and reply.claim is None
        assert reply.snapshot.snapshot_id == made.snapshot_id
        assert reply.snapshot.state == "ready" and reply.snapshot.sha256 == made.sha256
        assert reply.snapshot.size == 4096 and reply.snapshot.blob_key == made.blob_key
    # A node lacking some of its AVX-512 flags makes one of its own class.
    subset = await lookup(agent, SUBSET, node="node-subset")
    assert subset.snapshot is None and subset.claim is not None
    assert subset.claim.fingerprint_id == fingerprint_id(SUBSET) != made.fingerprint_id
    arm = await lookup(agent, ARM, node="node-arm")
    assert arm.claim is not None and arm.claim.fingerprint_id == fingerprint_id(ARM)
    # Other versions and functions are not served this snapshot.
    assert (await lookup(agent, HERE, version=2)).claim is not None
    assert (await lookup(agent, HERE, function="Other")).claim is not None


async def test_a_nodes_own_class_is_preferred_then_the_newest(
    svc: SnapshotsService, agent: Bus
) -> None:
    # The subset node's snapshot restores everywhere this machine's does, but a
    # node of this machine's class gets its own class's once there is one.
    subset_claim = (await lookup(agent, SUBSET, node="node-subset")).claim
    assert subset_claim is not None
    subset_made = await make_snapshot(svc, agent, subset_claim)

    async def served_here() -> SnapshotLookupReply | None:
        reply = await lookup(agent, HERE)
        return reply if reply.snapshot else None

    assert (await eventually(served_here)).snapshot.snapshot_id == subset_made.snapshot_id
    # BARE_METAL (another class) gets the compatible one too, no claim.
    assert (await lookup(agent, BARE_METAL)).snapshot is not None


async def test_a_snapshot_ready_between_look_and_claim_is_restored_not_remade(
    svc: SnapshotsService, agent: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: a lookup finds nothing ready, then the claim it would have hit
    turns ready before its insert. It must hand out that snapshot and leave
    no orphan claim that would block the class later."""
    made = await ready_snapshot(svc, agent)
    real_best = svc.catalog.best
    looks = 0

    async def first_look_misses(*args: Any) -> SnapshotInfo | None:
        nonlocal looks
        looks += 1
        return None if looks == 1 else await real_best(*args)

    monkeypatch.setattr(svc.catalog, "best", first_look_misses)
    reply = await lookup(agent, HERE)
    assert reply.claim is None and reply.snapshot is not None
    assert reply.snapshot.snapshot_id == made.snapshot_id
    assert svc.db is not None
    assert await svc.db.fetchval("SELECT count(*) FROM snapshots WHERE state = 'creating'") == 0


async def test_restores_are_counted_and_two_failures_in_a_row_make_it_suspect(
    svc: SnapshotsService, agent: Bus
) -> None:
    made = await ready_snapshot(svc, agent)
    sid, subject = made.snapshot_id, f"thaw.event.snapshot.{made.app}"

    async def restored(ok: bool) -> None:
        await agent.publish(
            subject, SnapshotRestored(snapshot_id=sid, node_id="node-b", ok=ok, seconds=0.3,
                                      error="" if ok else "criu: restore failed")
        )  # fmt: skip

    for ok in (True, True, False, True, False):  # never two failures in a row
        await restored(ok)
    await eventually(lambda: _counts(svc, sid, (3, 2)))
    assert (await row(svc, sid) or {})["state"] == "ready"
    await restored(False)
    await eventually(lambda: _counts(svc, sid, (3, 3)))
    assert (await row(svc, sid) or {})["state"] == "suspect"
    # A suspect snapshot is not handed out: the next container makes a new one.
    reply = await lookup(agent, HERE)
    assert reply.snapshot is None and reply.claim is not None
    assert reply.claim.snapshot_id != sid
    # And its row stays for `thaw snapshot list`.
    await asyncio.sleep(0.5)
    assert (await row(svc, sid) or {})["state"] == "suspect"


async def test_a_snapshot_whose_restores_keep_being_no_faster_than_its_cold_start_is_not_used(
    svc: SnapshotsService, agent: Bus
) -> None:
    """Three good restores in a row no faster than the 0.2 s cold start that
    made it: "unhelpful". Two slow ones, then a fast one, prove nothing."""
    made = await ready_snapshot(svc, agent, cold_start_s=0.2)
    sid, subject = made.snapshot_id, f"thaw.event.snapshot.{made.app}"
    assert (await row(svc, sid) or {})["cold_start_s"] == 0.2

    async def restored(seconds: float) -> None:
        await agent.publish(subject, SnapshotRestored(
            snapshot_id=sid, node_id="node-b", ok=True, seconds=seconds,
            event_id=uuid.uuid4().hex,
        ))  # fmt: skip

    # Slow, slow (the first a download, say), fast, slow, as slow as cold.
    for seconds in (0.5, 0.3, 0.1, 0.25, 0.2):
        await restored(seconds)
    await eventually(lambda: _counts(svc, sid, (5, 0)))
    assert (await row(svc, sid) or {})["state"] == "ready"
    assert (await lookup(agent, HERE)).snapshot is not None
    await restored(0.4)  # the third in a row
    await eventually(lambda: _counts(svc, sid, (6, 0)))
    got = await row(svc, sid) or {}
    assert (got["state"], got["restore_s"], got["cold_start_s"]) == ("unhelpful", 0.4, 0.2)
    # Not handed out, and no claim for another: the class starts cold, on
    # this node and on any other it serves.
    for fp in (HERE, BARE_METAL):
        assert await lookup(agent, fp, node="node-c") == SnapshotLookupReply()
    # A snapshot whose maker did not measure its cold start is never judged.
    unmeasured = await ready_snapshot(svc, agent, app="unmeasured")
    for _ in range(4):
        await agent.publish(f"thaw.event.snapshot.{unmeasured.app}", SnapshotRestored(
            snapshot_id=unmeasured.snapshot_id, node_id="node-b", ok=True, seconds=9.0,
            event_id=uuid.uuid4().hex,
        ))  # fmt: skip
    await eventually(lambda: _counts(svc, unmeasured.snapshot_id, (4, 0)))
    assert (await row(svc, unmeasured.snapshot_id) or {})["state"] == "ready"


async def test_a_restore_event_delivered_twice_is_counted_once(
    svc: SnapshotsService, agent: Bus
) -> None:
    made = await ready_snapshot(svc, agent)
    sid, subject = made.snapshot_id, f"thaw.event.snapshot.{made.app}"
    once = SnapshotRestored(snapshot_id=sid, node_id="node-b", ok=True, event_id="restore-1")
    failed = SnapshotRestored(
        snapshot_id=sid, node_id="node-b", ok=False, error="criu", event_id="restore-2"
    )
    for event in (once, once, failed, failed):  # each as if redelivered
        await agent.publish(subject, event)
    await eventually(lambda: _counts(svc, sid, (1, 1)))
    for event in (once, failed):  # later still
        await agent.publish(subject, event)
    last = SnapshotRestored(snapshot_id=sid, node_id="node-b", ok=True, event_id="restore-3")
    await agent.publish(subject, last)
    await eventually(lambda: _counts(svc, sid, (2, 1)))
    assert await _counts(svc, sid, (2, 1))


async def test_a_blob_failing_its_sha256_is_suspect_at_once_a_changed_cache_never(
    svc: SnapshotsService, agent: Bus
) -> None:
    cached = await ready_snapshot(svc, agent)
    subject = f"thaw.event.snapshot.{cached.app}"
    for _ in range(3):
        await agent.publish(subject, SnapshotRestored(
            snapshot_id=cached.snapshot_id, node_id="node-b", ok=False,
            error="the cached copy changed", cause="cache_corrupted", event_id=uuid.uuid4().hex,
        ))  # fmt: skip
    await eventually(lambda: _counts(svc, cached.snapshot_id, (0, 3)))
    assert (await row(svc, cached.snapshot_id) or {})["state"] == "ready"

    blob = await ready_snapshot(svc, agent, app="other")
    await agent.publish(f"thaw.event.snapshot.{blob.app}", SnapshotRestored(
        snapshot_id=blob.snapshot_id, node_id="node-b", ok=False,
        error="sha256 mismatch", cause="blob_corrupted", event_id=uuid.uuid4().hex,
    ))  # fmt: skip
    await eventually(lambda: _counts(svc, blob.snapshot_id, (0, 1)))
    assert (await row(svc, blob.snapshot_id) or {})["state"] == "suspect"


async def _counts(svc: SnapshotsService, sid: str, want: tuple[int, int]) -> bool:
    r = await row(svc, sid)
    return r is not None and (r["restores"], r["failures"]) == want


async def test_a_failed_creation_drops_the_claim(svc: SnapshotsService, agent: Bus) -> None:
    claim = (await lookup(agent, HERE)).claim
    assert claim is not None
    await agent.publish(
        "thaw.event.snapshot.embedder",
        SnapshotCreateFailed(snapshot_id=claim.snapshot_id, error="criu dump: no space left"),
    )

    async def claims_anew() -> SnapshotLookupReply | None:
        reply = await lookup(agent, HERE)
        return reply if reply.claim else None

    again = await eventually(claims_anew)
    assert again.claim.snapshot_id != claim.snapshot_id
    # The failed one is kept a while (obsolete, one failure): it counts
    # towards the class's creation backoff.
    dropped = await row(svc, claim.snapshot_id) or {}
    assert (dropped["state"], dropped["failures"], dropped["size"]) == ("obsolete", 1, 0)
    assert dropped["error"] == "criu dump: no space left"  # for `thaw deploy` and the listing


async def test_a_class_whose_snapshots_keep_failing_to_be_made_backs_off(
    make_settings: Callable[[], Awaitable[Settings]],
) -> None:
    policy = Policy(max_failed_creations=2, creation_backoff_s=2.0)
    async with running(await make_settings(), policy=policy) as svc:
        bus = await Bus.connect(svc.settings.nats_url, name="backoff-test")
        try:
            failed: list[str] = []
            for _ in range(2):
                claim = await eventually(lambda: _claim(bus, HERE))
                await bus.publish(
                    "thaw.event.snapshot.embedder",
                    SnapshotCreateFailed(snapshot_id=claim.snapshot_id, error="dump: tcp socket"),
                )
                failed.append(claim.snapshot_id)
                await eventually(lambda sid=claim.snapshot_id: _state_is(svc, sid, "obsolete"))
            # Two failures: no more claims for this class for a while...
            reply = await lookup(bus, HERE)
            assert reply.claim is None and reply.snapshot is None
            # ...while another class still gets one.
            assert (await lookup(bus, ARM, node="node-arm")).claim is not None
            # After the window the class tries again, and GC takes the failures.
            await eventually(lambda: _claim(bus, HERE), timeout_s=5)
            for sid in failed:
                await eventually(lambda sid=sid: _gone(svc, sid))
        finally:
            await bus.close(grace_s=1)


async def _claim(bus: Bus, fp: Fingerprint) -> SnapshotInfo | None:
    return (await lookup(bus, fp)).claim


async def _state_is(svc: SnapshotsService, sid: str, state: str) -> bool:
    return ((await row(svc, sid)) or {}).get("state") == state


async def _gone(svc: SnapshotsService, sid: str) -> bool:
    return await row(svc, sid) is None


async def test_a_claim_past_its_lease_is_claimed_anew(
    make_settings: Callable[[], Awaitable[Settings]],
) -> None:
    async with running(await make_settings(), policy=Policy(claim_lease_s=0.5)) as svc:
        bus = await Bus.connect(svc.settings.nats_url, name="lease-test")
        try:
            first = (await lookup(bus, HERE)).claim
            assert first is not None
            assert (await lookup(bus, HERE)).claim is None  # live
            # Its maker uploaded, then died before saying SnapshotCreated.
            assert svc.blob is not None
            await svc.blob.put(first.blob_key, b"half a snapshot")
            await asyncio.sleep(0.7)
            second = (await lookup(bus, HERE)).claim
            assert second is not None and second.snapshot_id != first.snapshot_id
            await eventually(lambda: _gone(svc, first.snapshot_id))
            assert not await svc.blob.exists(first.blob_key)  # no orphan blob
        finally:
            await bus.close(grace_s=1)


async def test_an_ephemeral_app_gets_no_claim(svc: SnapshotsService, agent: Bus) -> None:
    """`thaw run`'s apps live for one run: a snapshot would never restore."""
    assert svc.db is not None
    await svc.db.execute(
        "INSERT INTO apps (id, name, state, version, ephemeral)"
        " VALUES ('ap-once', 'once', 'deployed', 1, true)"
    )
    reply = await lookup(agent, HERE, app="once")
    assert reply.claim is None and reply.snapshot is None
    # A deployed (persistent) app in the same catalog still gets one.
    assert (await lookup(agent, HERE, app="kept")).claim is not None


# ---------------------------------------------------------------- app events and GC


async def test_a_redeploy_obsoletes_older_versions_and_gc_deletes_their_blobs(
    svc: SnapshotsService, agent: Bus
) -> None:
    assert svc.blob is not None
    v1 = await ready_snapshot(svc, agent, app="ranker", version=1)
    v2 = await ready_snapshot(svc, agent, app="ranker", version=2)
    other_app = await ready_snapshot(svc, agent, app="other", version=1)
    assert await svc.blob.exists(v1.blob_key)
    await agent.publish("thaw.event.app.ranker", AppEvent(app="ranker", version=2, state="deployed"))

    await eventually(lambda: _gone(svc, v1.snapshot_id))
    assert not await svc.blob.exists(v1.blob_key)
    assert (await row(svc, v2.snapshot_id) or {})["state"] == "ready"
    assert await svc.blob.exists(v2.blob_key)
    assert (await row(svc, other_app.snapshot_id) or {})["state"] == "ready"
    assert (await lookup(agent, HERE, app="ranker", version=2)).snapshot is not None

    # A stop makes every snapshot of the app obsolete, claims included.
    claim = (await lookup(agent, ARM, app="ranker", version=2, node="node-arm")).claim
    assert claim is not None
    await agent.publish("thaw.event.app.ranker", AppEvent(app="ranker", version=2, state="stopped"))
    await eventually(lambda: _gone(svc, v2.snapshot_id))
    await eventually(lambda: _gone(svc, claim.snapshot_id))
    assert not await svc.blob.exists(v2.blob_key)
    assert (await row(svc, other_app.snapshot_id) or {})["state"] == "ready"


async def test_a_snapshot_made_after_its_version_was_replaced_is_deleted(
    svc: SnapshotsService, agent: Bus
) -> None:
    """The agent finishes a snapshot of v1 after v2 was deployed and its claim
    was collected: GC's sweep of the apps table (what the gateway recorded)
    still finds it out of date and deletes it."""
    assert svc.blob is not None and svc.db is not None
    claim = (await lookup(agent, HERE, app="late", version=1)).claim
    assert claim is not None
    await svc.db.execute(
        "INSERT INTO apps (id, name, state, version) VALUES ('ap-late', 'late', 'deployed', 2)"
    )
    await agent.publish("thaw.event.app.late", AppEvent(app="late", version=2, state="deployed"))
    await eventually(lambda: _gone(svc, claim.snapshot_id))
    made = await make_snapshot(svc, agent, claim)
    await eventually(lambda: _gone_with_blob(svc, made))
    assert (await lookup(agent, HERE, app="late", version=2)).snapshot is None


async def _gone_with_blob(svc: SnapshotsService, made: SnapshotInfo) -> bool:
    assert svc.blob is not None
    seen = await svc.db.fetchval(  # type: ignore[union-attr]
        "SELECT count(*) FROM snapshots WHERE snapshot_id = $1", made.snapshot_id
    )
    return not await svc.blob.exists(made.blob_key) and seen == 0


# ---------------------------------------------------------------- refused messages


async def test_malformed_messages_are_refused_and_the_service_keeps_running(
    svc: SnapshotsService, agent: Bus
) -> None:
    errors: list[ErrorEvent] = []
    got = asyncio.Event()

    async def on_error(msg: Any) -> None:
        errors.append(_error.decode(msg.data))
        got.set()

    sub = await agent.nc.subscribe("thaw.event.error.snapshots", cb=on_error)
    await agent.nc.flush()
    try:
        claim = (await lookup(agent, HERE)).claim
        assert claim is not None
        bad_created = msgspec.structs.replace(claim, sha256="not-a-sha", size=10, blob_key="x")
        await agent.publish("thaw.event.snapshot.embedder", b"{not json")
        await agent.publish("thaw.event.snapshot.embedder", b'{"type": "snapshot_deleted"}')
        await agent.publish("thaw.event.snapshot.embedder", SnapshotCreated(snapshot=bad_created))
        await agent.publish("thaw.event.app.embedder", b'{"type": "app_event", "app": 3}')
        with pytest.raises(BusRequestError, match="SnapshotLookup"):
            await agent.request(LOOKUP_SUBJECT, b'{"type": "snapshot_lookup"}', timeout_s=5)
        bad_name = encode(
            SnapshotLookup(app="no.dots", function="f", version=1, node_id="n", fingerprint=HERE)
        )
        with pytest.raises(BusRequestError, match="invalid app name"):
            await agent.request(LOOKUP_SUBJECT, bad_name, timeout_s=5)

        await eventually(lambda: _at_least(errors, 6))
        codes = sorted(e.code for e in errors)
        assert codes.count("malformed") == 5 and codes.count("unknown") == 1, errors
        assert any("sha256" in e.error for e in errors)
        # The bad Created changed nothing: the claim is still being made...
        assert (await row(svc, claim.snapshot_id) or {})["state"] == "creating"
        # ...and good messages after the bad ones are handled.
        made = await make_snapshot(svc, agent, claim)

        async def handed_out() -> bool:
            reply = await lookup(agent, HERE)
            return reply.snapshot is not None and reply.snapshot.snapshot_id == made.snapshot_id

        await eventually(handed_out)
        assert svc.started and not svc.stopping.is_set()
    finally:
        await sub.unsubscribe()


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n
