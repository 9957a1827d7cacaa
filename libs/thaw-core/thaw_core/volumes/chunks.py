"""File content as chunks in the blob store: pieces of ``CHUNK_SIZE`` bytes
(the last one shorter), each stored once under its sha256
(``contract.volume_chunk_key``), whichever volume or file holds it; files
under ``PACK_BELOW`` committed together share pack blobs instead (a
reference names the range, ``thaw_core.volumes.refs``). A file is read and
written one piece at a time: never whole in memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from thaw_core.blob import BlobStore, Digested
from thaw_core.contract import volume_chunk_key, volume_pack_key
from thaw_core.volumes.refs import ChunkRef, parse_ref, read_checked

# Small enough that a change to a large file stores little, large enough
# that a 1 GiB file is 256 digests in its manifest entry.
CHUNK_SIZE = 4 << 20
# Files smaller than this, committed together, are stored in packs: one blob
# write (and, at commit, one look-up) for many files. Larger ones get chunk
# blobs of their own, looked up first, so identical content is stored once.
PACK_BELOW = 1 << 20


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
        # Pieces this uploader packed: digest -> their reference.
        self.packed: dict[str, str] = {}

    def forget(self) -> None:
        """Look in the store again from now on (what it held may have been
        collected since)."""
        self.known.clear()
        self.packed.clear()

    async def put_piece(self, piece: bytes) -> str:
        return await self._put_digested(piece, await asyncio.to_thread(digest, piece))

    async def _put_digested(self, piece: bytes, d: str) -> str:
        if d not in self.known:
            key = volume_chunk_key(d)
            if not await self.blob.exists(key):
                await self.blob.put(key, Digested(piece, d), sha256=d)
            self.known.add(d)
        return d

    async def upload_file(self, path: Path) -> tuple[int, list[str]]:
        """Store the chunks of ``path``; answer its size and chunk digests.
        A file of one chunk is read and hashed in one go (small files are
        many, and each trip to a thread counts). Pipelined: the next piece
        is read and hashed while the last ones are stored (up to
        ``PIECES_AHEAD`` in memory)."""
        f, piece, d = await asyncio.to_thread(_open_first, path)
        if f is None:
            return len(piece), [await self._put_digested(piece, d)] if piece else []
        size, storing = 0, []
        try:
            while piece:
                size += len(piece)
                storing.append(asyncio.ensure_future(self._put_digested(piece, d)))
                if len(storing) > PIECES_AHEAD:
                    await storing[-PIECES_AHEAD - 1]
                piece, d = await asyncio.to_thread(_read_digested, f)
            return size, list(await asyncio.gather(*storing))
        finally:
            for t in storing:
                t.cancel()
            await asyncio.gather(*storing, return_exceptions=True)
            await asyncio.to_thread(f.close)

    async def upload_small(
        self, paths: Sequence[str | Path]
    ) -> list[tuple[int, list[str]] | None]:
        """Store files of less than one chunk, many at once: read and hashed
        in one thread call; those under ``PACK_BELOW`` packed into one blob,
        the others looked up and stored in one batch (a commit of 10,000
        small files is a few dozen trips, not 40,000). None for a file found
        to hold a whole chunk or more: ``upload_file`` it."""
        read = await asyncio.to_thread(read_small, paths)
        refs: dict[str, str] = {}
        to_pack: dict[str, bytes] = {}
        fresh: dict[str, bytes] = {}
        for got in read:
            if got is None or not got[0]:
                continue
            piece, d = got
            if d in self.known:
                refs[d] = d
            elif d in self.packed:
                refs[d] = self.packed[d]
            elif len(piece) < PACK_BELOW:
                to_pack[d] = piece
            else:
                fresh[d] = piece
        if to_pack:
            refs |= await self._put_pack(to_pack)
        if fresh:
            keys = [volume_chunk_key(d) for d in fresh]
            found = await self.blob.stat_many(keys)
            missing = [(k, fresh[d], d) for k, d, info in zip(keys, fresh, found, strict=True)
                       if info is None]  # fmt: skip
            await self.blob.put_many(missing)
            self.known.update(fresh)
            refs |= {d: d for d in fresh}
        return [
            None if got is None else (len(got[0]), [refs[got[1]]] if got[0] else [])
            for got in read
        ]

    async def _put_pack(self, pieces: dict[str, bytes]) -> dict[str, str]:
        """Store ``pieces`` (by digest) as one pack; answer their references."""
        data, pack, refs = await asyncio.to_thread(pack_pieces, pieces)
        await self.blob.put(volume_pack_key(pack), data, sha256=pack)
        self.packed.update(refs)
        return refs


def pack_pieces(pieces: dict[str, bytes]) -> tuple[bytes, str, dict[str, str]]:
    """``pieces`` (by digest) as one pack: its bytes, its sha256, and the
    reference (``digest@pack:offset:length``) that names each piece in it."""
    data = b"".join(pieces.values())
    pack = hashlib.sha256(data).hexdigest()
    refs, offset = {}, 0
    for d, piece in pieces.items():
        refs[d] = str(ChunkRef(d, pack, offset, len(piece)))
        offset += len(piece)
    return data, pack, refs


# Pieces of one file read ahead of those being stored: with 2, the reads
# and hashes waited on the store's writes (a 1 GiB commit took 3.0 s against
# 2.4 s with 4, on this machine's disk); each costs CHUNK_SIZE of memory.
PIECES_AHEAD = 4


def _read_digested(f: BinaryIO) -> tuple[bytes, str]:
    piece = f.read(CHUNK_SIZE)
    return piece, digest(piece) if piece else ""


def read_small(paths: Sequence[str | Path]) -> list[tuple[bytes, str] | None]:
    """Each file's content and digest, or None where it holds a chunk or more."""
    out: list[tuple[bytes, str] | None] = []
    for path in paths:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            piece = _first_piece(fd)
        finally:
            os.close(fd)
        out.append((piece, digest(piece)) if len(piece) < CHUNK_SIZE else None)
    return out


def _first_piece(fd: int) -> bytes:
    """Up to CHUNK_SIZE bytes from the start of an open file, read into a
    buffer of the size fstat gives: ``read(CHUNK_SIZE)`` allocates 4 MiB for
    every file, however small, which tripled the time to read 10,000 files
    of 1 KiB. One byte more than that size is asked for, so that a file that
    grew since is read on to a whole chunk."""
    limit = min(os.fstat(fd).st_size + 1, CHUNK_SIZE)
    parts, held = [], 0
    while held < CHUNK_SIZE and (part := os.read(fd, limit - held)):
        parts.append(part)
        held += len(part)
        if held == limit:  # more than fstat said: it grew since
            limit = CHUNK_SIZE
    return b"".join(parts)


def _open_first(path: Path) -> tuple[BinaryIO | None, bytes, str]:
    """The file's first piece and its digest, and the file left open to read
    on from (None when that piece was all of it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        piece = _first_piece(fd)
        if len(piece) < CHUNK_SIZE:
            os.close(fd)
            return None, piece, digest(piece)
        return os.fdopen(fd, "rb"), piece, digest(piece)
    except BaseException:
        os.close(fd)
        raise


async def read_packed(blob: BlobStore, ref: ChunkRef) -> bytes:
    """A packed piece (``PACK_BELOW`` bytes at most), checked against its digest."""
    return read_checked(ref, await blob.get_range(ref.key, ref.offset, ref.length))


async def read_pieces(
    blob: BlobStore, refs: Sequence[ChunkRef], span_limit: int
) -> AsyncIterator[bytes]:
    """The pieces ``refs`` name, in order, each verified against its digest.
    A run of packed pieces from one pack, in ascending order, is one ranged
    read of the pack (up to ``span_limit`` bytes), not one read each."""
    i = 0
    while i < len(refs):
        ref = refs[i]
        if not ref.pack:
            async for piece in stream_chunks(blob, [ref.digest]):
                yield piece
            i += 1
            continue
        j = i + 1
        while (
            j < len(refs)
            and refs[j].pack == ref.pack
            and refs[j].offset >= refs[j - 1].offset
            and refs[j].offset + refs[j].length - ref.offset <= span_limit
        ):
            j += 1
        end = max(r.offset + r.length for r in refs[i:j])
        span = await blob.get_range(ref.key, ref.offset, end - ref.offset)
        for r in refs[i:j]:
            start = r.offset - ref.offset
            yield read_checked(r, span[start : start + r.length])
        i = j


async def stream_chunks(blob: BlobStore, chunks: Iterable[str]) -> AsyncIterator[bytes]:
    """A file's content, chunk after chunk, each verified against its digest."""
    for r in chunks:
        ref = parse_ref(r)
        if ref.pack:
            yield await read_packed(blob, ref)
            continue
        async for piece in blob.stream(ref.key):
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
