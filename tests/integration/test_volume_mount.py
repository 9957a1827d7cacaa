"""A volume materialised in directories, as the agent mounts it: writes
found by size and mtime and committed, loads and reloads from the node's
chunk cache, on real NATS, Postgres, the blob store and the volumes service."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from fixtures.volumes import running_volumes
from thaw_agent.volume_cache import ChunkCache
from thaw_agent.volume_mount import MountedVolume
from thaw_core.blob import LocalBlobStore
from thaw_core.bus import Bus
from thaw_core.config import Settings
from thaw_core.db import Database
from thaw_core.schema import VolumeInfo
from thaw_core.volumes import VolumesClient

pytestmark = pytest.mark.timeout(180)


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
