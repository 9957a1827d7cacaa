"""Memory snapshots on a real agent: checkpoint, restore, corruption, fingerprints.

Real NATS, a real S3 server, real runc + CRIU. The test plays the snapshots
service: it answers ``thaw.snapshots.lookup`` itself (a claim, then the
snapshot the agent reported), so that what is tested is the agent and the
runtime, whatever the catalog decides. Everything else is what a user
would see: results of calls, the container list, the snapshot events, the
blob in the store.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cloudpickle
import msgspec
import pytest
from fixtures.agent import (
    Agent,
    blob,  # noqa: F401 - a fixture
    make_agent,  # noqa: F401 - a fixture
    put_bundle,
    result_of,
    spec,
    value,
)
from fixtures.catalog import Catalog, catalog  # noqa: F401 - catalog is a fixture
from fixtures.host import needs_criu
from fixtures.logs import LogTap
from fixtures.wait import eventually
from thaw_agent import gpu_snapshot
from thaw_agent.snapshots import INFO_FILE, SnapshotCache
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.contract import invoke_subject
from thaw_core.fingerprint import fingerprint_id, local_fingerprint
from thaw_core.layers.mounts import mounts_under
from thaw_core.schema import (
    CpuFingerprint,
    Fingerprint,
    FunctionSpec,
    Invoke,
    Resources,
    SnapshotCreated,
    SnapshotCreateFailed,
    SnapshotInfo,
    SnapshotRestored,
)

pytestmark = [pytest.mark.slow, needs_criu]

APP_SOURCE = """
import os
import random

import thaw

app = thaw.App("snap-test")


@app.cls(enable_memory_snapshot=True)
class Snappy:
    @thaw.enter(snap=True)
    def load(self):
        # Expensive state, built once and captured in the snapshot.
        self.table = {i: i * i for i in range(300_000)}
        self.snap_pid = os.getpid()
        self.snap_draw = random.random()
        self.restores = 0
        with open("/var/tmp/made-at-snap", "w") as f:
            f.write("from the snapshot")

    @thaw.enter(snap=False)
    def setup(self):
        self.restores += 1

    @thaw.method()
    def state(self):
        with open("/var/tmp/made-at-snap") as f:
            written = f.read()
        return {
            "table": len(self.table),
            "snap_pid": self.snap_pid,
            "snap_draw": self.snap_draw,
            "restores": self.restores,
            "draw": random.random(),
            "file": written,
            "container": os.environ.get("THAW_CONTAINER_ID"),
        }
"""


def snappy_spec() -> FunctionSpec:
    return spec("Snappy", kind="class", methods=["state"], enable_memory_snapshot=True)


async def call_state(bus: Bus, app: str) -> tuple[dict[str, Any], str]:
    call_id = f"fc-{uuid.uuid4().hex}"
    msg = Invoke(
        call_id=call_id,
        app=app,
        function="Snappy",
        method="state",
        args=cloudpickle.dumps(((), {})),
    )
    await bus.publish(invoke_subject(app, "Snappy"), msg)
    result = await result_of(bus, call_id, timeout_s=60)
    return value(result), result.container_id


async def snapshot_made(
    agent: Agent, bus: Bus, blob: BlobStore, cat: Catalog, sha: str, spec: FunctionSpec | None = None
) -> str:
    """The first container claims, snapshots, serves; returns its id."""
    cid = await agent.start(bus, cat.app, sha, spec or snappy_spec())
    await agent.wait_state(cid, "ready", timeout_s=60)

    async def created() -> bool:
        return bool(cat.of(SnapshotCreated) or cat.of(SnapshotCreateFailed))

    await eventually(created, 60, "the snapshot's creation event")
    assert not cat.of(SnapshotCreateFailed), cat.of(SnapshotCreateFailed)
    return cid


async def test_snapshot_made_then_restored_with_state_and_fresh_randomness(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
) -> None:
    app = f"snp-{uuid.uuid4().hex[:10]}"
    cat = await catalog(app)
    agent = await make_agent()
    sha = await put_bundle(blob, APP_SOURCE)

    first = await snapshot_made(agent, bus, blob, cat, sha)
    info = cat.of(SnapshotCreated)[0].snapshot
    # The snapshot is in the blob store, with the size and hash it was reported with.
    stored = await blob.stat(info.blob_key)
    assert stored is not None and stored.size == info.size > 0
    assert stored.sha256 == info.sha256
    assert info.state == "ready" and info.fingerprint == local_fingerprint()
    # The claiming container was itself restored from what it wrote, and serves.
    assert agent.container(first).info().restored
    state, served_by = await call_state(bus, app)
    assert served_by == first
    assert state["table"] == 300_000 and state["restores"] == 1
    assert state["file"] == "from the snapshot"
    # The heartbeat tells the scheduler this node holds the snapshot.
    assert info.snapshot_id in agent.svc.heartbeat().cached_snapshots

    # Two more containers: both restored from the snapshot.
    started = time.monotonic()
    second = await agent.start(bus, app, sha, snappy_spec())
    third = await agent.start(bus, app, sha, snappy_spec())
    for cid in (second, third):
        c = await agent.wait_state(cid, "ready", timeout_s=30)
        assert c.info().restored
    restored = [e for e in cat.of(SnapshotRestored) if e.ok]
    assert len(restored) == 2, cat.events
    assert all(e.snapshot_id == info.snapshot_id and 0 < e.seconds < 30 for e in restored)
    print(f"two restores took {time.monotonic() - started:.2f}s")

    await agent.svc.manager.stop(first, 5)
    await agent.svc.manager.stop(third, 5)
    state2, by2 = await call_state(bus, app)
    assert by2 == second and state2["container"] == second
    # snap=True state came from the snapshot: same process image, same draw.
    assert state2["snap_pid"] == state["snap_pid"]
    assert state2["snap_draw"] == state["snap_draw"]
    assert state2["table"] == 300_000 and state2["file"] == "from the snapshot"
    # snap=False ran once after this restore.
    assert state2["restores"] == 1
    # Reseeded after restore: no two containers draw the same numbers.
    assert state2["draw"] != state["draw"]


async def test_a_snapshot_with_an_ephemeral_disk_restores_its_files_onto_one(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
) -> None:
    app = f"snp-{uuid.uuid4().hex[:10]}"
    cat = await catalog(app)
    agent = await make_agent()
    sha = await put_bundle(blob, APP_SOURCE)
    spec = msgspec.structs.replace(snappy_spec(), resources=Resources(ephemeral_disk_mb=64))

    first = await snapshot_made(agent, bus, blob, cat, sha, spec)
    assert agent.container(first).info().restored
    second = await agent.start(bus, app, sha, spec)
    assert (await agent.wait_state(second, "ready", timeout_s=60)).info().restored
    await agent.svc.manager.stop(first, 5)

    state, served_by = await call_state(bus, app)
    assert served_by == second
    # The file the snapshot phase wrote, on the restored container's own limited layer.
    assert state["file"] == "from the snapshot"
    rw = agent.container(second).paths.rw
    assert any(Path(m) == rw for m in mounts_under(rw))


async def test_corrupted_snapshot_is_detected_and_the_container_starts_cold(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
) -> None:
    app = f"snc-{uuid.uuid4().hex[:10]}"
    cat = await catalog(app)
    maker = await make_agent()
    sha = await put_bundle(blob, APP_SOURCE)
    first = await snapshot_made(maker, bus, blob, cat, sha)
    info = cat.of(SnapshotCreated)[0].snapshot
    await maker.svc.manager.stop(first, 5)
    # Someone overwrites the blob: its bytes no longer match the catalog.
    await blob.put(info.blob_key, b"not a snapshot at all")

    other = await make_agent()  # a node without a local copy: it must fetch
    cid = await other.start(bus, app, sha, snappy_spec())
    c = await other.wait_state(cid, "ready", timeout_s=60)
    assert not c.info().restored
    failed = [e for e in cat.of(SnapshotRestored) if not e.ok]
    assert len(failed) == 1 and "corrupt" in failed[0].error, cat.events
    assert info.snapshot_id not in other.svc.heartbeat().cached_snapshots
    state, by = await call_state(bus, app)
    assert by == cid and state["table"] == 300_000 and state["restores"] == 1


def flip_a_byte(path: Path) -> None:
    """Change one byte in the middle of ``path``, as a bad disk or a stray write would."""
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))


async def test_a_changed_cached_snapshot_never_restores_and_is_fetched_again(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
) -> None:
    app = f"snv-{uuid.uuid4().hex[:10]}"
    cat = await catalog(app)
    agent = await make_agent()
    sha = await put_bundle(blob, APP_SOURCE)
    first = await snapshot_made(agent, bus, blob, cat, sha)
    await agent.svc.manager.stop(first, 5)
    info = cat.of(SnapshotCreated)[0].snapshot
    cache = agent.svc.snapshots.cache
    entry = cache.path(info.snapshot_id)
    pages = max((entry / "images").glob("pages-*.img"), key=lambda p: p.stat().st_size)
    upper_file = next(p for p in (entry / "upper").rglob("made-at-snap") if p.is_file())

    for n, target in enumerate((pages, upper_file), start=1):
        original = target.read_bytes()
        flip_a_byte(target)
        cid = await agent.start(bus, app, sha, snappy_spec())
        c = await agent.wait_state(cid, "ready", timeout_s=60)
        assert not c.info().restored, f"restored from a changed {target.name}"
        state, by = await call_state(bus, app)  # the call succeeds, cold
        assert by == cid and state["table"] == 300_000 and state["file"] == "from the snapshot"
        failed = [e for e in cat.of(SnapshotRestored) if not e.ok]
        assert len(failed) == n and failed[-1].cause == "cache_corrupted", cat.events
        assert "fails verification" in failed[-1].error

        async def replaced(target: Path = target, original: bytes = original) -> bool:
            if info.snapshot_id not in cache.ids():
                return False
            await cache.verify(info.snapshot_id)
            return target.read_bytes() == original

        # The entry is dropped and fetched again from the blob store, intact.
        await eventually(replaced, 60, f"the cached snapshot replaced after a changed {target.name}")
        await agent.svc.manager.stop(cid, 5)

    # And restores from it again.
    cid = await agent.start(bus, app, sha, snappy_spec())
    c = await agent.wait_state(cid, "ready", timeout_s=60)
    assert c.info().restored


async def test_incompatible_node_does_not_restore(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = f"sni-{uuid.uuid4().hex[:10]}"
    cat = await catalog(app)
    maker = await make_agent()
    sha = await put_bundle(blob, APP_SOURCE)
    first = await snapshot_made(maker, bus, blob, cat, sha)
    await maker.svc.manager.stop(first, 5)

    # Another machine: another CPU. Even offered the snapshot, it starts cold.
    other_fp = Fingerprint(
        cpu=CpuFingerprint(arch="aarch64", vendor="ARM", model="Neoverse-V2"),
        criu=local_fingerprint().criu,
        kernel=local_fingerprint().kernel,
    )
    recorded = tmp_path / "fingerprint.json"
    recorded.write_bytes(msgspec.json.encode(other_fp))
    monkeypatch.setenv("THAW_TEST_FINGERPRINT_FILE", str(recorded))
    other = await make_agent()
    assert other.svc.heartbeat().fingerprint == other_fp
    cid = await other.start(bus, app, sha, snappy_spec())
    c = await other.wait_state(cid, "ready", timeout_s=60)
    assert not c.info().restored
    assert not cat.of(SnapshotRestored)
    state, by = await call_state(bus, app)
    assert by == cid and state["restores"] == 1
    await asyncio.sleep(0)


async def test_gpu_snapshot_falls_back_to_cpu_where_the_node_cannot(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if gpu_snapshot.unavailable(local_fingerprint().driver) is None:
        pytest.skip("this node takes GPU snapshots: the fallback is not exercised")
    app = f"sng-{uuid.uuid4().hex[:10]}"
    cat = await catalog(app)
    agent = await make_agent()
    tap = await LogTap.open(bus, app, "Snappy")
    sha = await put_bundle(blob, APP_SOURCE)
    spec = msgspec.structs.replace(
        snappy_spec(), experimental_options={"enable_gpu_snapshot": True}
    )
    cid = await agent.start(bus, app, sha, spec)
    await agent.wait_state(cid, "ready", timeout_s=60)
    await tap.wait_for("GPU snapshot not available on this node", stream="system")
    # A CPU snapshot all the same, and the container serves from it.
    await eventually(lambda: cat.of(SnapshotCreated), 60, "the CPU snapshot")
    assert agent.container(cid).info().restored
    state, by = await call_state(bus, app)
    assert by == cid and state["table"] == 300_000


async def test_failed_checkpoint_reported_and_the_container_serves_cold(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
    catalog: Callable[[str], Awaitable[Catalog]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = f"snf-{uuid.uuid4().hex[:10]}"
    cat = await catalog(app)
    broken = tmp_path / "criu"
    broken.write_text("#!/bin/sh\necho 'criu is broken on this node' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("THAW_CRIU", str(broken))
    agent = await make_agent()
    tap = await LogTap.open(bus, app, "Snappy")
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(bus, app, sha, snappy_spec())
    c = await agent.wait_state(cid, "ready", timeout_s=60)
    await tap.wait_for("memory snapshot failed, going on without it", stream="system")
    assert "runc checkpoint failed" in tap.text("system")

    async def failed() -> bool:
        return bool(cat.of(SnapshotCreateFailed))

    await eventually(failed, 30, "SnapshotCreateFailed")
    assert cat.of(SnapshotCreateFailed)[0].snapshot_id == cat.claimed.snapshot_id  # type: ignore[union-attr]
    assert not cat.of(SnapshotCreated) and not c.info().restored
    # It serves all the same (CRIU left the paused process running: it takes
    # up where it was), and snap=False ran once.
    state, by = await call_state(bus, app)
    assert by == cid and state["table"] == 300_000 and state["restores"] == 1
    assert state["container"] == cid


async def test_local_cache_keeps_the_most_recently_used_within_its_limit(
    tmp_path: Path, blob: BlobStore
) -> None:
    cache = SnapshotCache(blob, tmp_path / "cache", limit_bytes=25_000)
    fp = local_fingerprint()
    infos = []
    # Last uses in the past, one second apart: a use now is the most recent.
    past = time.time() - 100
    for n in range(3):
        made = cache.staging(f"snap-{n}")
        (made / "images").mkdir(parents=True)
        (made / "upper").mkdir()
        (made / "images" / "pages-1.img").write_bytes(b"x" * 10_000)
        info = SnapshotInfo(
            snapshot_id=f"snap-{n}", app="a", function="f", version=1,
            fingerprint=fp, fingerprint_id=fingerprint_id(fp), state="ready",
        )  # fmt: skip
        infos.append(info)
        await cache.add(made, info)
        if n < 2:
            os.utime(cache.path(info.snapshot_id) / INFO_FILE, (past + n, past + n))
        if n == 1:
            await cache.ensure(infos[0])  # used again: now the most recent
    # Three of 10 kB do not fit in 25 kB: the least recently used goes.
    assert cache.ids() == ["snap-0", "snap-2"]
