"""A volume mounted in directories, as the agent mounts it: writes found by
size and mtime and committed, loads (an overlay on the node's file cache,
as root) and reloads from the node's caches, on real NATS, Postgres, the
blob store and the volumes service."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.volumes import running_volumes
from thaw_agent import volume_overlay
from thaw_agent.container_volumes import ContainerVolumes, NodeVolumes, commit_left_over
from thaw_agent.volume_cache import ChunkCache
from thaw_agent.volume_changes import walk_tree
from thaw_agent.volume_mount import MountedVolume
from thaw_core.blob import LocalBlobStore
from thaw_core.bus import Bus
from thaw_core.config import Settings
from thaw_core.db import Database
from thaw_core.image_users import ImageUser
from thaw_core.layers import mounts_under, remove_tree, unmount
from thaw_core.schema import VolumeInfo, VolumeMount
from thaw_core.volumes import CHUNK_SIZE, VolumeError, VolumesClient

pytestmark = pytest.mark.timeout(180)
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root mounts an overlay")


@pytest.fixture(autouse=True)
def no_mounts_left(tmp_path: Path) -> Iterator[None]:
    """Mounts are overlays (as root): unmounted with their test, before
    pytest removes its old temporary directories."""
    yield
    for point in mounts_under(tmp_path):
        unmount(point)


@pytest.fixture
async def client(
    nats_url: str, make_db: Callable[..., Awaitable[Database]], bus: Bus
) -> AsyncIterator[VolumesClient]:
    db = await make_db()
    state = Path(tempfile.mkdtemp(prefix="thaw-mount-"))
    settings = Settings.from_env(
        {"THAW_STATE_DIR": str(state), "THAW_NATS_URL": nats_url, "THAW_DATABASE_URL": db.dsn,
         "THAW_BLOB_URL": f"file://{state}/blobs", "THAW_NODE_ID": "mount-test"}
    )  # fmt: skip
    async with running_volumes(settings):
        yield VolumesClient(bus, LocalBlobStore(state / "blobs", fsync=False))


async def volume(client: VolumesClient) -> VolumeInfo:
    return await client.ensure(f"m-{uuid.uuid4().hex[:10]}", create_if_missing=True)


async def mounted(client: VolumesClient, info: VolumeInfo, where: Path) -> MountedVolume:
    m = MountedVolume(client, ChunkCache(where / "cache", client.blob), info, where / "data")
    await m.load()
    return m


def contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def mount_points() -> set[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        return {line.split(" ")[4] for line in f}


async def test_writes_without_commit_calls_land_and_a_new_mount_sees_them(
    client: VolumesClient, tmp_path: Path
) -> None:
    info = await volume(client)
    a = await mounted(client, info, tmp_path / "a")
    for i in range(200):
        (a.root / f"result_{i}.txt").write_text(f"result {i}")
    done = await a.commit()
    assert done is not None and done.files == 200
    assert await a.commit() is None  # nothing changed since
    b = await mounted(client, info, tmp_path / "b")
    assert contents(b.root) == {f"result_{i}.txt": f"result {i}".encode() for i in range(200)}


async def test_reload_brings_in_changes_and_deletions_and_keeps_them(
    client: VolumesClient, tmp_path: Path
) -> None:
    info = await volume(client)
    a = await mounted(client, info, tmp_path / "a")
    b = await mounted(client, info, tmp_path / "b")
    (a.root / "keep.txt").write_text("k")
    (a.root / "sub").mkdir()
    (a.root / "sub" / "gone.txt").write_text("g")
    await a.commit()
    assert await b.reload() == 2
    assert contents(b.root) == {"keep.txt": b"k", "sub/gone.txt": b"g"}
    (b.root / "sub" / "gone.txt").unlink()
    (b.root / "keep.txt").write_text("changed")
    await b.commit()
    (a.root / "other.txt").write_text("o")  # a commits without having seen b's changes
    await a.commit()
    await a.reload()
    assert contents(a.root) == {"keep.txt": b"changed", "other.txt": b"o"}
    assert await a.reload() == 0


async def test_two_mounts_committing_one_file_at_once_end_with_one_whole_version(
    client: VolumesClient, tmp_path: Path
) -> None:
    info = await volume(client)
    a = await mounted(client, info, tmp_path / "a")
    b = await mounted(client, info, tmp_path / "b")
    one, two = os.urandom(5 << 20), os.urandom(6 << 20)
    (a.root / "model.bin").write_bytes(one)
    (b.root / "model.bin").write_bytes(two)
    (a.root / "a-only").write_text("a")
    (b.root / "b-only").write_text("b")
    await asyncio.gather(a.commit(), b.commit())
    c = await mounted(client, info, tmp_path / "c")
    got = contents(c.root)
    assert got["model.bin"] in (one, two)
    assert got["a-only"] == b"a" and got["b-only"] == b"b"


async def test_a_volume_deleted_while_mounted_is_refused_clearly_and_never_written_again(
    client: VolumesClient, tmp_path: Path
) -> None:
    name = f"m-{uuid.uuid4().hex[:10]}"
    await client.ensure(name, create_if_missing=True)
    node = NodeVolumes(client, ChunkCache(tmp_path / "cache", client.blob), interval_s=3600)
    mounts = ContainerVolumes(node, [VolumeMount(path="/data", name=name)], tmp_path / "v", "c-1")
    ((host_dir, path),) = await mounts.load()
    assert path == "/data"
    (host_dir / "kept.txt").write_text("committed")
    await mounts.commit(name)

    await client.delete(name)
    again = await client.ensure(name, create_if_missing=True)  # another volume, same name
    (host_dir / "late.txt").write_text("written after the delete")
    for op in (mounts.commit, mounts.reload, mounts.commit):
        with pytest.raises(VolumeError, match="was deleted while mounted") as e:
            await op(name)
        assert "/data" in e.value.message
    await mounts.close()  # the last commit leaves the deleted volume alone
    assert (await client.entries(again.volume_id))[1] == []
    assert (host_dir / "late.txt").read_text() == "written after the delete"


async def test_what_a_dead_agents_container_wrote_is_committed_by_its_next_life(
    client: VolumesClient, tmp_path: Path
) -> None:
    name = f"m-{uuid.uuid4().hex[:10]}"
    info = await client.ensure(name, create_if_missing=True)
    containers_dir = tmp_path / "containers"
    node = NodeVolumes(client, ChunkCache(tmp_path / "cache", client.blob), interval_s=3600)
    mounts = ContainerVolumes(
        node, [VolumeMount(path="/data", name=name)], containers_dir / "c-1" / "volumes", "c-1"
    )
    ((host_dir, _),) = await mounts.load()
    (host_dir / "committed.txt").write_text("one")
    (host_dir / "gone.txt").write_text("soon deleted")
    await mounts.commit(name)
    other = await mounted(client, info, tmp_path / "other")  # commits in between, elsewhere
    (other.root / "theirs.txt").write_text("theirs")
    await other.commit()
    # The agent dies: no close, no last commit; the container wrote on meanwhile.
    (host_dir / "committed.txt").write_text("two")
    (host_dir / "sub").mkdir()
    (host_dir / "sub" / "new.txt").write_text("new")
    (host_dir / "gone.txt").unlink()

    await commit_left_over(NodeVolumes(client, node.cache, 3600), containers_dir)
    fresh = await mounted(client, info, tmp_path / "fresh")
    assert contents(fresh.root) == {
        "committed.txt": b"two", "sub/new.txt": b"new", "theirs.txt": b"theirs"
    }  # fmt: skip


async def test_a_file_of_many_chunks_comes_back_whole_and_in_order(
    client: VolumesClient, tmp_path: Path
) -> None:
    info = await volume(client)
    a = await mounted(client, info, tmp_path / "a")
    data = os.urandom(CHUNK_SIZE * 9 + 123)  # ten chunks, read ahead while others are stored
    (a.root / "model.bin").write_bytes(data)
    (a.root / "exact.bin").write_bytes(data[: CHUNK_SIZE * 2])
    await a.commit()
    b = await mounted(client, info, tmp_path / "b")
    assert (b.root / "model.bin").read_bytes() == data
    assert (b.root / "exact.bin").read_bytes() == data[: CHUNK_SIZE * 2]


async def test_many_small_files_beside_large_ones_all_land_with_their_contents(
    client: VolumesClient, tmp_path: Path
) -> None:
    # More than one batch of small files (thaw_agent.volume_mount.BATCH_FILES),
    # some identical, an empty one, and files of one chunk and more.
    info = await volume(client)
    a = await mounted(client, info, tmp_path / "a")
    want = {f"d{i % 7}/f{i}.txt": os.urandom(i % 300) for i in range(1200)}
    want |= {f"same/{i}": b"identical" for i in range(5)}
    want["big/one-chunk.bin"] = os.urandom(CHUNK_SIZE)
    want["big/more.bin"] = os.urandom(CHUNK_SIZE + 1)
    want["big/under.bin"] = os.urandom(CHUNK_SIZE - 1)
    for rel, data in want.items():
        (a.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (a.root / rel).write_bytes(data)
    await a.commit()
    b = await mounted(client, info, tmp_path / "b")
    assert contents(b.root) == want
    assert await a.commit() is None  # nothing changed since: nothing hashed or sent


async def test_a_commit_that_landed_as_its_agent_died_is_not_sent_again_over_newer_ones(
    client: VolumesClient, tmp_path: Path
) -> None:
    info = await volume(client)
    containers_dir = tmp_path / "containers"
    mine = await mounted(client, info, containers_dir / "c-1" / "volumes")
    (mine.root / "a.txt").write_text("mine")
    real_commit = client.commit

    async def lands_then_the_agent_dies(*args: Any, **kwargs: Any) -> VolumeInfo:
        await real_commit(*args, **kwargs)
        raise ConnectionError("the agent died before it noted the commit")

    dying = VolumesClient(client.bus, client.blob)
    dying.commit = lands_then_the_agent_dies  # type: ignore[method-assign]
    mine.client = dying
    with pytest.raises(ConnectionError):
        await mine.commit()
    theirs = await mounted(client, info, tmp_path / "theirs")
    (theirs.root / "a.txt").write_text("theirs, later")
    await theirs.commit()

    await commit_left_over(
        NodeVolumes(client, ChunkCache(tmp_path / "cache", client.blob), 3600), containers_dir
    )
    fresh = await mounted(client, info, tmp_path / "fresh")
    assert contents(fresh.root) == {"a.txt": b"theirs, later"}


async def test_a_left_over_commit_waits_for_a_volumes_service_not_answering_yet(
    client: VolumesClient, tmp_path: Path
) -> None:
    info = await volume(client)
    containers_dir = tmp_path / "containers"
    mine = await mounted(client, info, containers_dir / "c-1" / "volumes")
    (mine.root / "a.txt").write_text("written before the agent died")
    starting = VolumesClient(client.bus, client.blob)
    refusals = []

    async def not_yet(*args: Any, **kwargs: Any) -> VolumeInfo:
        if not refusals:
            refusals.append(1)
            raise VolumeError("internal", "the volumes service is not running")
        return await client.commit(*args, **kwargs)

    starting.commit = not_yet  # type: ignore[method-assign]
    await commit_left_over(
        NodeVolumes(starting, ChunkCache(tmp_path / "cache", client.blob), 3600), containers_dir
    )
    assert refusals == [1]
    fresh = await mounted(client, info, tmp_path / "fresh")
    assert contents(fresh.root) == {"a.txt": b"written before the agent died"}


@as_root
async def test_a_mount_from_the_nodes_cache_is_an_overlay_its_writes_never_reach_the_cache(
    client: VolumesClient, tmp_path: Path
) -> None:
    info = await volume(client)
    seed = await mounted(client, info, tmp_path / "seed")
    version = {"keep.txt": b"kept", "sub/edit.txt": b"before", "gone.txt": b"to be deleted"}
    for rel, data in version.items():
        (seed.root / rel).parent.mkdir(exist_ok=True)
        (seed.root / rel).write_bytes(data)
    await seed.commit()
    cache = ChunkCache(tmp_path / "node-cache", client.blob)
    user = ImageUser(100_123, 100_456, "/home/app")
    a, b = (MountedVolume(client, cache, info, tmp_path / n / "data", user) for n in ("a", "b"))
    await a.load()
    await b.load()

    assert {str(a.root), str(b.root)} <= mount_points()
    assert contents(a.root) == contents(b.root) == version
    files = cache.root / "files"
    cached = {p: p.read_bytes() for p in files.rglob("*") if p.is_file()}
    assert sorted(cached.values()) == sorted(version.values())  # one copy for both mounts
    for p in [a.root, a.root / "sub", *cached]:
        assert (p.stat().st_uid, p.stat().st_gid) == (100_123, 100_456)

    (a.root / "sub" / "edit.txt").write_bytes(b"after, and longer")
    (a.root / "gone.txt").unlink()
    assert {p: p.read_bytes() for p in cached} == cached
    assert contents(b.root) == version
    written, gone = a.changes()
    assert ([w.path for w in written], gone) == (["sub/edit.txt"], ["gone.txt"])
    loaded = a.version
    done = await a.commit()
    assert done is not None and done.version == loaded + 1
    _, committed = await client.entries(info.volume_id, since_version=loaded)
    assert {(e.path, e.deleted) for e in committed} == {
        ("sub/edit.txt", False), ("gone.txt", True)
    }  # fmt: skip

    await a.remove()
    assert str(a.root) not in mount_points() and not a.root.exists()
    assert not a.root.with_name("data.layers").exists()
    assert {p: p.read_bytes() for p in cached} == cached  # removing a mount unlinks its links
    assert contents(b.root) == version
    assert await b.reload() == 2
    assert contents(b.root) == {"keep.txt": b"kept", "sub/edit.txt": b"after, and longer"}


def cache_bytes(cache: ChunkCache) -> int:
    return sum(p.lstat().st_blocks * 512 for p in cache.root.rglob("*") if p.is_file())


@as_root
async def test_the_nodes_caches_stay_under_their_limit_keeping_what_mounts_link(
    client: VolumesClient, tmp_path: Path
) -> None:
    """Past its limit the cache drops what was used least recently: chunks
    once their files are assembled, whole files once no mount links them;
    a mount's files never change, and a volume evicted mounts again."""
    mib = 1 << 20
    made = {}
    for name in ("a", "b"):
        info = await volume(client)
        seed = await mounted(client, info, tmp_path / f"seed-{name}")
        for i in range(3):
            (seed.root / f"{name}{i}.bin").write_bytes(os.urandom(mib))
        made[name] = (info, contents(seed.root))
        await seed.commit()
        await seed.remove()
    cache = ChunkCache(tmp_path / "node-cache", client.blob, limit_bytes=4 * mib)

    a = MountedVolume(client, cache, made["a"][0], tmp_path / "a" / "data")
    await a.load()  # 3 MiB of chunks, 3 MiB of files it links: the chunks go
    await cache.evicted()
    assert contents(a.root) == made["a"][1]
    assert cache_bytes(cache) <= 4 * mib
    assert not [p for p in cache.root.glob("??/*")]  # every chunk evicted
    linked = {p for p in (cache.root / "files").rglob("*") if p.is_file()}
    assert len(linked) == 3

    await a.remove()  # a's files are linked no more: the next load may drop them
    b = MountedVolume(client, cache, made["b"][0], tmp_path / "b" / "data")
    await b.load()
    await cache.evicted()
    assert contents(b.root) == made["b"][1]
    assert cache_bytes(cache) <= 4 * mib
    assert not any(p.exists() for p in linked)  # a's, used longest ago, went first

    again = MountedVolume(client, cache, made["a"][0], tmp_path / "again" / "data")
    await again.load()  # its chunks fetched again
    assert contents(again.root) == made["a"][1]
    assert contents(b.root) == made["b"][1]
    await again.remove()
    await b.remove()


async def test_nothing_is_evicted_while_a_load_reads_the_caches(
    client: VolumesClient, tmp_path: Path
) -> None:
    info = await volume(client)
    seed = await mounted(client, info, tmp_path / "seed")
    (seed.root / "f.bin").write_bytes(os.urandom(1 << 20))
    await seed.commit()
    await seed.remove()
    cache = ChunkCache(tmp_path / "node-cache", client.blob, limit_bytes=1)
    _, entries = await client.entries(info.volume_id)
    async with cache.in_use():
        await cache.ensure([c for e in entries for c in e.chunks])
        assert await cache.evict() == 0  # a load would build its files from these
        assert cache_bytes(cache) >= 1 << 20
    assert await cache.evict() >= 1 << 20
    assert cache_bytes(cache) == 0


@as_root
async def test_a_left_over_overlay_a_reboot_unmounted_is_mounted_again_and_committed(
    client: VolumesClient, tmp_path: Path
) -> None:
    name = f"m-{uuid.uuid4().hex[:10]}"
    info = await client.ensure(name, create_if_missing=True)
    containers_dir = tmp_path / "containers"
    node = NodeVolumes(client, ChunkCache(tmp_path / "cache", client.blob), interval_s=3600)
    mounts = ContainerVolumes(
        node, [VolumeMount(path="/data", name=name)], containers_dir / "c-1" / "volumes", "c-1"
    )
    ((host_dir, _),) = await mounts.load()
    (host_dir / "a.txt").write_text("one")
    (host_dir / "b.txt").write_text("kept")
    await mounts.commit(name)
    (host_dir / "a.txt").write_text("two")
    unmount(host_dir)  # the node rebooted: the agent and its overlays are gone
    assert not (host_dir / "b.txt").exists()

    await commit_left_over(NodeVolumes(client, node.cache, 3600), containers_dir)
    assert str(host_dir) in mount_points()
    remove_tree(containers_dir)  # as the agent's next life does after
    assert not any(p.startswith(str(containers_dir)) for p in mount_points())
    fresh = await mounted(client, info, tmp_path / "fresh")
    assert contents(fresh.root) == {"a.txt": b"two", "b.txt": b"kept"}


async def test_where_no_overlay_can_be_mounted_the_files_are_copied_in(
    client: VolumesClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = await volume(client)
    seed = await mounted(client, info, tmp_path / "seed")
    (seed.root / "a.txt").write_text("alpha")
    await seed.commit()
    monkeypatch.setattr(volume_overlay, "refusal", lambda: "the agent is not root")
    a = await mounted(client, info, tmp_path / "a")
    assert str(a.root) not in mount_points() and contents(a.root) == {"a.txt": b"alpha"}
    (a.root / "a.txt").write_text("changed")
    assert [w.path for w in a.changes()[0]] == ["a.txt"]


# An overlay mount's commit finds what changed in its upper dir alone
# (thaw_agent.volume_changes): each way a container changes the merged view
# leaves another trace there, and each commit carries exactly its paths.

SEED = {
    "keep.txt": b"kept",
    "gone.txt": b"to be deleted",
    "sub/edit.txt": b"before",
    "sub/deep/x.txt": b"deep",
    "other/o.txt": b"other",
}
SUB = {"sub/edit.txt", "sub/deep/x.txt"}


def upper_of(m: MountedVolume) -> Path:
    return volume_overlay.layers_dir(m.root) / "upper"


def xattr(path: Path, name: str) -> bytes | None:
    return os.getxattr(path, name) if name in os.listxattr(path) else None


async def seeded_overlay(client: VolumesClient, tmp_path: Path) -> tuple[VolumeInfo, MountedVolume]:
    """A volume holding ``SEED``, mounted as an overlay at ``tmp_path/a``."""
    info = await volume(client)
    seed = await mounted(client, info, tmp_path / "seed")
    for rel, data in SEED.items():
        (seed.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed.root / rel).write_bytes(data)
    await seed.commit()
    a = await mounted(client, info, tmp_path / "a")
    assert str(a.root) in mount_points() and contents(a.root) == SEED
    return info, a


async def commit_paths(client: VolumesClient, m: MountedVolume) -> tuple[set[str], set[str]]:
    """Commit ``m``; the paths its commit wrote and deleted."""
    since = m.version
    if await m.commit() is None:
        return set(), set()
    _, entries = await client.entries(m.volume.volume_id, since_version=since)
    files = [e for e in entries if e.kind != "dir"]
    return {e.path for e in files if not e.deleted}, {e.path for e in files if e.deleted}


def overwrite_in_place(root: Path) -> None:
    with open(root / "sub" / "edit.txt", "r+b") as f:
        f.write(b"AFTER!")  # the same size: found by its mtime


def rm_rf_and_recreate(root: Path) -> None:
    remove_tree(root / "sub")
    (root / "sub").mkdir()
    (root / "sub" / "new.txt").write_bytes(b"new")


def file_over_a_dir(root: Path) -> None:
    remove_tree(root / "sub")
    (root / "sub").write_bytes(b"a file now")


def rename_nested_dir(root: Path) -> None:
    os.rename(root / "sub" / "deep", root / "other" / "moved")


CHANGES: list[Any] = [
    # id, change, written, deleted, what upper/ holds for it
    ("write", lambda r: [(r / "new").mkdir(), (r / "new" / "one.txt").write_bytes(b"1"),
                         (r / "top.txt").write_bytes(b"t")],
     {"new/one.txt", "top.txt"}, set(), None),
    ("overwrite-in-place", overwrite_in_place, {"sub/edit.txt"}, set(), None),
    ("delete-lower-file", lambda r: (r / "gone.txt").unlink(), set(), {"gone.txt"},
     lambda u: os.stat(u / "gone.txt").st_rdev == 0),  # a whiteout: a char device 0/0
    ("delete-lower-dir", lambda r: remove_tree(r / "sub"), set(), SUB, None),
    ("rm-rf-and-recreate", rm_rf_and_recreate, {"sub/new.txt"}, SUB,
     lambda u: xattr(u / "sub", "trusted.overlay.opaque") == b"y"),
    ("file-over-a-dir", file_over_a_dir, {"sub"}, SUB, None),
    ("rename-lower-dir", lambda r: os.rename(r / "sub", r / "moved"),
     {"moved/edit.txt", "moved/deep/x.txt"}, SUB,
     lambda u: xattr(u / "moved", "trusted.overlay.redirect") is not None),
    ("rename-nested-dir", rename_nested_dir, {"other/moved/x.txt"}, {"sub/deep/x.txt"},
     lambda u: xattr(u / "other" / "moved", "trusted.overlay.redirect") is not None),
    ("chown-only", lambda r: os.chown(r / "keep.txt", 4321, 4321), set(), set(),
     lambda u: (u / "keep.txt").stat().st_uid == 4321),  # copied up, unchanged
]  # fmt: skip


@as_root
@pytest.mark.parametrize(("change", "written", "deleted", "in_upper"),
                         [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES])  # fmt: skip
async def test_an_overlay_commit_carries_exactly_what_changed_and_a_new_mount_shows_it(
    client: VolumesClient,
    tmp_path: Path,
    change: Callable[[Path], object],
    written: set[str],
    deleted: set[str],
    in_upper: Callable[[Path], bool] | None,
) -> None:
    info, a = await seeded_overlay(client, tmp_path)
    change(a.root)
    if in_upper is not None:  # the change left the trace the case is about
        assert in_upper(upper_of(a))
    merged = contents(a.root)
    # Just what a walk of the whole merged view finds.
    found, full = a.changes(), walk_tree(str(a.root), a._known)
    assert ({w.path for w in found[0]}, set(found[1])) == ({w.path for w in full[0]}, set(full[1]))
    assert await commit_paths(client, a) == (written, deleted)
    assert await a.commit() is None  # nothing changed since
    fresh = await mounted(client, info, tmp_path / "fresh")
    assert contents(fresh.root) == merged


@as_root
async def test_an_overlay_commit_finds_what_later_commits_and_reloads_changed(
    client: VolumesClient, tmp_path: Path
) -> None:
    info, a = await seeded_overlay(client, tmp_path)
    # Created, committed, then deleted: only upper/ ever held it (no whiteout).
    (a.root / "extra").mkdir()
    (a.root / "extra" / "e.txt").write_bytes(b"e")
    (a.root / "keep.txt").write_bytes(b"kept, changed")
    assert await commit_paths(client, a) == ({"extra/e.txt", "keep.txt"}, set())
    (a.root / "extra" / "e.txt").unlink()
    (a.root / "keep.txt").unlink()  # the lower holds it: a whiteout
    assert await commit_paths(client, a) == (set(), {"extra/e.txt", "keep.txt"})

    # What a reload writes into the merged view is no change of this mount's.
    b = await mounted(client, info, tmp_path / "b")
    (b.root / "other" / "o.txt").write_bytes(b"theirs")
    (b.root / "theirs.txt").write_bytes(b"t")
    (b.root / "gone.txt").unlink()
    await b.commit()
    assert await a.reload() == 3
    assert await a.commit() is None
    (a.root / "theirs.txt").unlink()
    assert await commit_paths(client, a) == (set(), {"theirs.txt"})

    # A next life of the agent does not know which files the lower holds:
    # it looks each up once, and finds what only upper/ held gone.
    (a.root / "late.txt").write_bytes(b"late")
    await a.commit()
    resumed = MountedVolume.resume(client, a.cache, a.state_file)
    (a.root / "late.txt").unlink()
    assert await commit_paths(client, resumed) == (set(), {"late.txt"})
    assert await resumed.commit() is None
    fresh = await mounted(client, info, tmp_path / "fresh")
    assert contents(fresh.root) == contents(a.root) == {
        "sub/edit.txt": b"before", "sub/deep/x.txt": b"deep", "other/o.txt": b"theirs"
    }  # fmt: skip
