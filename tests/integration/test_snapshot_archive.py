"""A snapshot's archive streamed from the blob store into tar as it arrives
(``thaw_agent.snapshot_archive``): real tar and zstd, a real local blob store."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from thaw_agent.snapshot_archive import SnapshotCorrupted, fetch_unpacked, pack
from thaw_core.blob import LocalBlobStore

KEY = "snapshots/sn-test.tar.zst"


def made_snapshot(root: Path) -> Path:
    """A directory shaped like a checkpoint: CRIU images and an overlay upper."""
    source = root / "made"
    (source / "images").mkdir(parents=True)
    (source / "upper" / "tmp").mkdir(parents=True)
    (source / "images" / "pages-1.img").write_bytes(os.urandom(3 << 20))  # several chunks
    (source / "upper" / "tmp" / "state").write_text("from the snapshot")
    return source


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", fsync=False)


async def stored_archive(store: LocalBlobStore, tmp_path: Path) -> tuple[Path, str]:
    source = made_snapshot(tmp_path)
    archive = tmp_path / "made.tar.zst"
    pack(source, archive)
    await store.put(KEY, archive)
    return source, hashlib.sha256(archive.read_bytes()).hexdigest()


async def test_an_archive_unpacks_as_it_streams_byte_for_byte(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    source, sha = await stored_archive(store, tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    await fetch_unpacked(store, KEY, sha, dest)
    for part in ("images/pages-1.img", "upper/tmp/state"):
        assert (dest / part).read_bytes() == (source / part).read_bytes()


async def test_an_archive_that_is_not_the_cataloged_one_is_refused(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    # A whole, valid archive, but not the bytes the catalog names: tar alone
    # would accept it; the digest, checked as the last chunk arrives, must not.
    await stored_archive(store, tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(SnapshotCorrupted, match="sha256"):
        await fetch_unpacked(store, KEY, "0" * 64, dest)


async def test_bytes_that_are_no_archive_are_refused_saying_so(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    await store.put(KEY, b"not a snapshot at all" * 1000)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(SnapshotCorrupted, match="cannot unpack"):
        await fetch_unpacked(store, KEY, None, dest)


async def test_an_archive_without_its_parts_is_refused(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    # The CRIU images without the filesystem changes they go with.
    source = tmp_path / "half"
    (source / "images").mkdir(parents=True)
    archive = tmp_path / "half.tar.zst"
    tar = ["tar", "--zstd", "-C", str(source), "-cf", str(archive), "images"]
    await asyncio.to_thread(subprocess.run, tar, check=True)
    await store.put(KEY, archive)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(SnapshotCorrupted, match="no upper/"):
        await fetch_unpacked(store, KEY, None, dest)
