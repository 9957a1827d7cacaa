"""File content as chunks in the blob store: pieces of ``CHUNK_SIZE`` bytes
(the last one shorter), each stored once under its sha256
(``contract.volume_chunk_key``), whichever volume or file holds it. A file
is read and written one piece at a time: never whole in memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from thaw_core.blob import BlobStore
from thaw_core.contract import volume_chunk_key

# Small enough that a change to a large file stores little, large enough
# that a 1 GiB file is 256 digests in its manifest entry.
CHUNK_SIZE = 4 << 20


def file_pieces(f: BinaryIO) -> Iterator[bytes]:
    """The pieces of an open file, CHUNK_SIZE each (blocking reads)."""
    while piece := f.read(CHUNK_SIZE):
        yield piece


def digest(piece: bytes) -> str:
    return hashlib.sha256(piece).hexdigest()


def chunk_digests(path: Path) -> tuple[int, list[str]]:
    """The size and chunk digests of a file, hashing it piece by piece (blocking)."""
    size, digests = 0, []
    with path.open("rb") as f:
        for piece in file_pieces(f):
            size += len(piece)
            digests.append(digest(piece))
    return size, digests


class ChunkUploader:
    """Stores the chunks of files, skipping those the store already holds.
    ``known`` remembers what this uploader stored or found, so a digest is
    looked up once."""

    def __init__(self, blob: BlobStore, known: set[str] | None = None) -> None:
        self.blob = blob
        self.known = known if known is not None else set()

    async def put_piece(self, piece: bytes) -> str:
        d = await asyncio.to_thread(digest, piece)
        if d not in self.known:
            key = volume_chunk_key(d)
            if not await self.blob.exists(key):
                await self.blob.put(key, piece, sha256=d)
            self.known.add(d)
        return d

    async def upload_file(self, path: Path) -> tuple[int, list[str]]:
        """Store the chunks of ``path``; answer its size and chunk digests."""
        f = await asyncio.to_thread(path.open, "rb")
        try:
            size, digests = 0, []
            while piece := await asyncio.to_thread(f.read, CHUNK_SIZE):
                size += len(piece)
                digests.append(await self.put_piece(piece))
            return size, digests
        finally:
            await asyncio.to_thread(f.close)


async def stream_chunks(blob: BlobStore, chunks: Iterable[str]) -> AsyncIterator[bytes]:
    """A file's content, chunk after chunk, each verified against its digest."""
    for d in chunks:
        async for piece in blob.stream(volume_chunk_key(d)):
            yield piece


async def write_chunks(blob: BlobStore, chunks: Iterable[str], dest: Path, mode: int) -> None:
    """Write a file from its chunks: to a temporary name beside ``dest``, then
    renamed over it, so a reader sees the old file or the whole new one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.thaw-part")
    out = await asyncio.to_thread(tmp.open, "wb")
    try:
        async for piece in stream_chunks(blob, chunks):
            await asyncio.to_thread(out.write, piece)
        await asyncio.to_thread(out.close)
        os.chmod(tmp, mode & 0o7777)
        os.replace(tmp, dest)
    except BaseException:
        out.close()
        tmp.unlink(missing_ok=True)
        raise
