"""The volumes service on real NATS, Postgres and a blob store: versions,
commits (concurrent ones, failed ones, large ones), listings and bad input,
through the client the gateway and the agent use."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from fixtures.volumes import running_volumes
from fixtures.wait import eventually
from thaw_core.blob import LocalBlobStore
from thaw_core.bus import Bus
from thaw_core.config import Settings
from thaw_core.contract import volume_chunk_key, volume_pack_key
from thaw_core.db import Database
from thaw_core.schema import VolumeEntry
from thaw_core.volumes import CHUNK_SIZE, ChunkUploader, VolumeError, VolumesClient
from thaw_core.volumes.chunks import stream_chunks
from thaw_core.volumes.refs import ChunkRef, parse_ref
from thaw_volumes.gc import ChunkCollector
from thaw_volumes.service import VolumesService

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def db(make_db: Callable[..., Awaitable[Database]]) -> Database:
    return await make_db()


@pytest.fixture
def state_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="thaw-volumes-"))


@pytest.fixture
async def service(nats_url: str, db: Database, state_dir: Path) -> AsyncIterator[VolumesService]:
    settings = Settings.from_env(
        {"THAW_STATE_DIR": str(state_dir), "THAW_NATS_URL": nats_url,
         "THAW_DATABASE_URL": db.dsn, "THAW_BLOB_URL": f"file://{state_dir}/blobs",
         "THAW_NODE_ID": "volumes-test", "THAW_VOLUME_MAX_BYTES": str(64 << 20)}
    )  # fmt: skip
    async with running_volumes(settings) as svc:
        yield svc


@pytest.fixture
def blob(state_dir: Path) -> LocalBlobStore:
    return LocalBlobStore(state_dir / "blobs", fsync=False)


@pytest.fixture
def client(service: VolumesService, bus: Bus, blob: LocalBlobStore) -> VolumesClient:
    return VolumesClient(bus, blob)


def unique(prefix: str = "vol") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def put(blob: LocalBlobStore, path: str, data: bytes) -> VolumeEntry:
    """Store ``data``'s chunks and describe it as the file ``path``."""
    up = ChunkUploader(blob)
    chunks = [await up.put_piece(data[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE)]
    return VolumeEntry(path=path, size=len(data), chunks=chunks, mtime=1.0)


async def files(client: VolumesClient, volume_id: str) -> dict[str, list[str]]:
    _, entries = await client.entries(volume_id)
    return {e.path: e.chunks for e in entries if e.kind == "file"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_create_look_up_list_delete(client: VolumesClient) -> None:
    name = unique()
    with pytest.raises(VolumeError) as missing:
        await client.ensure(name)
    assert missing.value.code == "not_found" and "create_if_missing=True" in missing.value.message
    made = await client.ensure(name, create_if_missing=True)
    again = await client.ensure(name, create_if_missing=True)
    assert made.volume_id == again.volume_id and made.version == 0
    assert name in [v.name for v in await client.list_all()]
    assert (await client.delete(name)).volume_id == made.volume_id
    with pytest.raises(VolumeError) as gone:
        await client.delete(name)
    assert gone.value.code == "not_found"
    remade = await client.ensure(name, create_if_missing=True)
    assert remade.volume_id != made.volume_id


async def test_bad_names_are_refused(client: VolumesClient) -> None:
    for bad in ("a/b", "", "../x", "a b"):
        with pytest.raises(VolumeError) as e:
            await client.ensure(bad, create_if_missing=True)
        assert e.value.code == "bad_request" and "invalid volume name" in e.value.message


async def test_commits_make_versions_and_reloads_see_only_changes(
    client: VolumesClient, blob: LocalBlobStore
) -> None:
    vol = await client.ensure(unique(), create_if_missing=True)
    a, b = await put(blob, "a.txt", b"alpha"), await put(blob, "dir/b.txt", b"beta")
    v1 = await client.commit(vol.volume_id, [a, b], [])
    assert v1.version == 1 and v1.files == 2 and v1.size_bytes == 9
    c = await put(blob, "dir/c.txt", b"gamma")
    v2 = await client.commit(vol.volume_id, [c], ["a.txt"], base_version=1)
    assert v2.version == 2 and v2.files == 2 and v2.size_bytes == 9

    version, changed = await client.entries(vol.volume_id, since_version=1)
    assert version == 2
    assert {(e.path, e.deleted) for e in changed} == {("a.txt", True), ("dir/c.txt", False)}
    assert await files(client, vol.volume_id) == {"dir/b.txt": b.chunks, "dir/c.txt": c.chunks}
    _, under = await client.entries(vol.volume_id, prefix="/dir/")
    assert [e.path for e in under] == ["dir/b.txt", "dir/c.txt"]
    _, nothing = await client.entries(vol.volume_id, since_version=2)
    assert nothing == []


async def test_concurrent_commits_of_different_files_both_land(
    client: VolumesClient, blob: LocalBlobStore, bus: Bus, nats_url: str
) -> None:
    vol = await client.ensure(unique(), create_if_missing=True)
    other_bus = await Bus.connect(nats_url, name="test-other-container")
    try:
        other = VolumesClient(other_bus, blob)
        mine = [await put(blob, f"mine/{i}.txt", f"m{i}".encode()) for i in range(50)]
        theirs = [await put(blob, f"theirs/{i}.txt", f"t{i}".encode()) for i in range(50)]
        await asyncio.gather(
            client.commit(vol.volume_id, mine, []), other.commit(vol.volume_id, theirs, [])
        )
    finally:
        await other_bus.close(grace_s=1)
    got = await files(client, vol.volume_id)
    assert len(got) == 100
    assert (await client.ensure(vol.name)).version == 2


async def test_one_file_committed_twice_at_once_is_one_whole_version(
    client: VolumesClient, blob: LocalBlobStore
) -> None:
    vol = await client.ensure(unique(), create_if_missing=True)
    # Two chunks each, so a mix of the two would show.
    one = await put(blob, "model.bin", b"1" * (CHUNK_SIZE + 10))
    two = await put(blob, "model.bin", b"2" * (CHUNK_SIZE + 20))
    await asyncio.gather(
        client.commit(vol.volume_id, [one], []), client.commit(vol.volume_id, [two], [])
    )
    _, entries = await client.entries(vol.volume_id)
    assert len(entries) == 1
    assert (entries[0].chunks, entries[0].size) in ((one.chunks, one.size), (two.chunks, two.size))


async def test_a_deletion_is_kept_through_a_commit_that_did_not_touch_the_file(
    client: VolumesClient, blob: LocalBlobStore
) -> None:
    vol = await client.ensure(unique(), create_if_missing=True)
    await client.commit(vol.volume_id, [await put(blob, "x", b"x"), await put(blob, "y", b"y")], [])
    await client.commit(vol.volume_id, [], ["x"], base_version=1)
    # Another container loaded version 1 (x present) and commits only z.
    await client.commit(vol.volume_id, [await put(blob, "z", b"z")], [], base_version=1)
    assert sorted(await files(client, vol.volume_id)) == ["y", "z"]


async def test_a_file_replacing_a_directory_and_the_other_way_round(
    client: VolumesClient, blob: LocalBlobStore
) -> None:
    vol = await client.ensure(unique(), create_if_missing=True)
    await client.commit(
        vol.volume_id, [await put(blob, "d/one", b"1"), await put(blob, "d/two", b"2")], []
    )
    await client.commit(vol.volume_id, [await put(blob, "d", b"now a file")], [])
    assert sorted(await files(client, vol.volume_id)) == ["d"]
    info = await client.commit(vol.volume_id, [await put(blob, "d/three", b"3")], [])
    assert sorted(await files(client, vol.volume_id)) == ["d/three"]
    assert info.files == 1 and info.size_bytes == 1


async def test_a_failed_commit_leaves_the_last_good_version(
    client: VolumesClient, blob: LocalBlobStore
) -> None:
    vol = await client.ensure(unique(), create_if_missing=True, max_bytes=10)
    good = await client.commit(vol.volume_id, [await put(blob, "ok", b"12345")], [])
    before = await files(client, vol.volume_id)

    unstored = VolumeEntry(path="lost", size=3, chunks=[sha(b"not stored")])
    with pytest.raises(VolumeError) as e:
        await client.commit(vol.volume_id, [await put(blob, "new", b"n"), unstored], ["ok"])
    assert e.value.code == "bad_request" and "not stored" in e.value.message

    with pytest.raises(VolumeError) as e:
        await client.commit(vol.volume_id, [await put(blob, "big", b"x" * 11)], [])
    assert e.value.code == "too_large" and "limit of 10" in e.value.message

    lying = VolumeEntry(path="short", size=100, chunks=(await put(blob, "s", b"abc")).chunks)
    with pytest.raises(VolumeError) as e:
        await client.commit(vol.volume_id, [lying], [])
    assert "not 100" in e.value.message

    for bad in ("../escape", "/abs/../../x", "a/../../b"):
        with pytest.raises(VolumeError) as e:
            await client.commit(vol.volume_id, [await put(blob, bad, b"e")], [])
        assert e.value.code == "bad_request"

    assert (await client.ensure(vol.name)).version == good.version
    assert await files(client, vol.volume_id) == before


async def test_a_retried_commit_lands_once(client: VolumesClient, blob: LocalBlobStore) -> None:
    vol = await client.ensure(unique(), create_if_missing=True)
    entry = await put(blob, "once", b"1")
    first = await client.commit(vol.volume_id, [entry], [], commit_id="c-1")
    again = await client.commit(vol.volume_id, [entry], [], commit_id="c-1")
    assert first.version == again.version == 1


async def test_a_commit_to_a_deleted_volume_is_refused(
    client: VolumesClient, blob: LocalBlobStore
) -> None:
    vol = await client.ensure(unique(), create_if_missing=True)
    await client.delete(vol.name)
    with pytest.raises(VolumeError) as e:
        await client.commit(vol.volume_id, [await put(blob, "late", b"1")], [])
    assert e.value.code == "conflict" and "deleted" in e.value.message


async def test_commits_racing_a_delete_land_before_it_or_are_refused(
    client: VolumesClient, blob: LocalBlobStore, db: Database
) -> None:
    entries = [await put(blob, f"f{i}.txt", f"{i}".encode()) for i in range(8)]
    for _ in range(5):
        vol = await client.ensure(unique(), create_if_missing=True)
        commits = [client.commit(vol.volume_id, [e], []) for e in entries]
        outcomes = await asyncio.gather(client.delete(vol.name), *commits, return_exceptions=True)
        assert not isinstance(outcomes[0], BaseException), outcomes[0]
        for got in outcomes[1:]:
            if isinstance(got, BaseException):
                assert isinstance(got, VolumeError) and got.code == "conflict", got
                assert "deleted" in got.message and "nothing was committed" in got.message
            else:
                assert got.volume_id == vol.volume_id
        # Nothing of the deleted volume is left, and its name is free again.
        left = await db.fetchval(
            "SELECT count(*) FROM volume_files WHERE volume_id = $1", vol.volume_id
        )
        assert left == 0
        with pytest.raises(VolumeError) as e:
            await client.ensure(vol.name)
        assert e.value.code == "not_found"


async def test_a_large_commit_is_staged_and_read_back_in_pages(
    client: VolumesClient, blob: LocalBlobStore
) -> None:
    vol = await client.ensure(unique(), create_if_missing=True)
    shared = await put(blob, "x", b"same content")  # identical files: one chunk stored
    entries = [
        VolumeEntry(path=f"many/{i:05d}.txt", size=shared.size, chunks=shared.chunks)
        for i in range(5000)
    ]
    info = await client.commit(vol.volume_id, entries, [])
    assert info.files == 5000
    version, listed = await client.entries(vol.volume_id)
    assert version == 1 and [e.path for e in listed] == [e.path for e in entries]
    assert not await blob.list("volumes/commits/")


async def test_chunks_no_volume_names_are_collected_and_named_ones_kept(
    client: VolumesClient, blob: LocalBlobStore, db: Database
) -> None:
    def tag(what: str) -> bytes:
        return f"{what} {uuid.uuid4().hex}".encode()

    old, new, shared, doomed, never = (tag(w) for w in ("old", "new", "shared", "doomed", "never"))
    kept_vol = await client.ensure(unique(), create_if_missing=True)
    gone_vol = await client.ensure(unique(), create_if_missing=True)
    await client.commit(kept_vol.volume_id, [await put(blob, "f.txt", old)], [])
    await client.commit(kept_vol.volume_id, [await put(blob, "f.txt", new)], [])  # old superseded
    await client.commit(kept_vol.volume_id, [await put(blob, "s.txt", shared)], [])
    await client.commit(gone_vol.volume_id, [await put(blob, "s.txt", shared)], [])
    await client.commit(gone_vol.volume_id, [await put(blob, "d.txt", doomed)], [])
    await client.delete(gone_vol.name)
    await ChunkUploader(blob).put_piece(never)  # stored, never committed

    async def stored(data: bytes) -> bool:
        return await blob.exists(volume_chunk_key(sha(data)))

    patient = await ChunkCollector(db, blob, grace_s=3600).run_once()
    assert patient.removed == 0 and all([await stored(d) for d in (old, doomed, never)])
    got = await ChunkCollector(db, blob, grace_s=0).run_once()
    assert got.removed >= 3
    assert [await stored(d) for d in (old, doomed, never)] == [False, False, False]
    assert [await stored(d) for d in (new, shared)] == [True, True]
    assert await files(client, kept_vol.volume_id) == {"f.txt": [sha(new)], "s.txt": [sha(shared)]}


async def test_a_commit_racing_collection_lands_whole_or_is_refused(
    client: VolumesClient, blob: LocalBlobStore, db: Database
) -> None:
    vol = await client.ensure(unique(), create_if_missing=True)
    collector = ChunkCollector(db, blob, grace_s=0)
    refused = 0
    for i in range(20):
        entry = await put(blob, f"f{i}.txt", f"racing {i} {uuid.uuid4().hex}".encode())
        await collector.run_once()  # its chunk is unnamed: collected unless a commit holds it
        await ChunkUploader(blob).put_piece(f"racing {i}".encode())  # something to collect
        commit, _ = await asyncio.gather(
            client.commit(vol.volume_id, [entry], []), collector.run_once(), return_exceptions=True
        )
        if isinstance(commit, BaseException):
            assert isinstance(commit, VolumeError) and "nothing was committed" in commit.message
            refused += 1
    # Whatever landed names only chunks that are stored.
    _, entries = await client.entries(vol.volume_id)
    for e in entries:
        for d in e.chunks:
            assert await blob.exists(volume_chunk_key(d)), f"{e.path} names collected chunk {d}"
    assert len(entries) + refused == 20


async def test_the_service_collects_a_deleted_volumes_chunks_on_its_own(
    nats_url: str, db: Database, bus: Bus, tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {"THAW_STATE_DIR": str(tmp_path), "THAW_NATS_URL": nats_url,
         "THAW_DATABASE_URL": db.dsn, "THAW_BLOB_URL": f"file://{tmp_path}/blobs",
         "THAW_NODE_ID": "volumes-gc-test", "THAW_VOLUME_GC_INTERVAL_S": "0.2",
         "THAW_VOLUME_CHUNK_GRACE_S": "3"}
    )  # fmt: skip
    blob = LocalBlobStore(tmp_path / "blobs", fsync=False)
    async with running_volumes(settings):
        client = VolumesClient(bus, blob)
        vol = await client.ensure(unique(), create_if_missing=True)
        data = f"doomed {uuid.uuid4().hex}".encode()
        await client.commit(vol.volume_id, [await put(blob, "d.txt", data)], [])
        key = volume_chunk_key(sha(data))
        assert await blob.exists(key)
        await client.delete(vol.name)

        async def collected() -> bool:
            return not await blob.exists(key)

        await eventually(collected, 60, "the deleted volume's chunk to be collected")


async def pack(blob: LocalBlobStore, tmp_path: Path, files: dict[str, bytes]) -> list[VolumeEntry]:
    """Store ``files`` as the agent does a commit's small files (one pack)."""
    for rel, data in files.items():
        (tmp_path / rel).write_bytes(data)
    got = await ChunkUploader(blob).upload_small([tmp_path / rel for rel in files])
    return [
        VolumeEntry(path=rel, size=g[0], chunks=g[1], mtime=1.0)
        for rel, g in zip(files, got, strict=True)
        if g is not None
    ]


async def read(blob: LocalBlobStore, entry: VolumeEntry) -> bytes:
    return b"".join([piece async for piece in stream_chunks(blob, entry.chunks)])


async def test_small_files_share_one_pack_and_read_back_whole(
    client: VolumesClient, blob: LocalBlobStore, tmp_path: Path
) -> None:
    want = {f"f{i}.txt": f"small {i} {uuid.uuid4().hex}".encode() * (i + 1) for i in range(50)}
    want["same.txt"] = want["f3.txt"]
    want["empty.txt"] = b""
    entries = await pack(blob, tmp_path, want)
    packs = {parse_ref(c).pack for e in entries for c in e.chunks}
    assert len(packs) == 1 and "" not in packs
    vol = await client.ensure(unique(), create_if_missing=True)
    await client.commit(vol.volume_id, entries, [])
    _, listed = await client.entries(vol.volume_id)
    assert {e.path: await read(blob, e) for e in listed} == want
    assert await blob.list("volumes/chunks/") == []  # no blob per file


async def test_a_pack_goes_once_no_file_names_any_piece_of_it(
    client: VolumesClient, blob: LocalBlobStore, db: Database, tmp_path: Path
) -> None:
    entries = await pack(blob, tmp_path, {f"p{i}": f"pack {i} {uuid.uuid4().hex}".encode()
                                          for i in range(3)})  # fmt: skip
    key = volume_pack_key(parse_ref(entries[0].chunks[0]).pack)
    vol = await client.ensure(unique(), create_if_missing=True)
    await client.commit(vol.volume_id, entries, [])
    collector = ChunkCollector(db, blob, grace_s=0)
    await client.commit(vol.volume_id, [], ["p0", "p1"])
    await collector.run_once()
    assert await blob.exists(key)  # p2 still names it
    _, listed = await client.entries(vol.volume_id)
    assert [await read(blob, e) for e in listed] == [await read(blob, entries[2])]
    await client.commit(vol.volume_id, [], ["p2"])
    await collector.run_once()
    assert not await blob.exists(key)


async def test_a_commit_naming_a_missing_pack_or_a_range_past_its_end_is_refused(
    client: VolumesClient, blob: LocalBlobStore, tmp_path: Path
) -> None:
    [entry] = await pack(blob, tmp_path, {"a.txt": b"packed content"})
    ref = parse_ref(entry.chunks[0])
    vol = await client.ensure(unique(), create_if_missing=True)
    bad = {
        "missing": ChunkRef(ref.digest, sha(b"no such pack"), 0, ref.length),
        "past its end": ChunkRef(ref.digest, ref.pack, 1, ref.length),
    }
    for why, wrong in bad.items():
        e = VolumeEntry(path="a.txt", size=entry.size, chunks=[str(wrong)], mtime=1.0)
        with pytest.raises(VolumeError) as got:
            await client.commit(vol.volume_id, [e], [])
        assert "nothing was committed" in got.value.message, why
    with pytest.raises(VolumeError, match="not a chunk reference"):
        e = VolumeEntry(path="a.txt", size=entry.size, chunks=[entry.chunks[0] + "x"], mtime=1.0)
        await client.commit(vol.volume_id, [e], [])
    assert (await client.ensure(vol.name)).version == 0
    await client.commit(vol.volume_id, [entry], [])
    assert await files(client, vol.volume_id) == {"a.txt": entry.chunks}
