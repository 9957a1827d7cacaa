"""What both backends share: hashing while data moves, verifying it, and the
read side written once over each backend's blocking primitives."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from thaw_core.blob.protocol import (
    CHUNK,
    BlobData,
    BlobInfo,
    BlobIntegrityError,
    Digested,
    check_key,
)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _check_prefix(prefix: str) -> str:
    # A prefix may end in "/" or in the middle of a name, but it must not
    # climb out of the store.
    if prefix.startswith("/") or "\0" in prefix or ".." in prefix.split("/"):
        raise ValueError(f"invalid blob prefix {prefix!r}")
    return prefix


def _expected(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    s = sha256.lower()
    if not _HEX64.match(s):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return s


def verify(key: str, expected: str | None, actual: str) -> None:
    if expected and expected != actual:
        raise BlobIntegrityError(
            f"blob {key!r}: sha256 is {actual}, expected {expected}", actual=actual
        )


def _write_hashed(out: BinaryIO, chunk: bytes | bytearray | memoryview, h: hashlib._Hash) -> None:
    h.update(chunk)
    out.write(chunk)


def _copy_hashed(src: BinaryIO, out: BinaryIO | None, h: hashlib._Hash) -> int:
    """Copy src to out (if any) while hashing; returns the byte count."""
    n = 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        if out is not None:
            out.write(chunk)
        n += len(chunk)
    return n


def hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        n = _copy_hashed(f, None, h)
    return n, h.hexdigest()


InMemory = bytes | bytearray | memoryview | Digested
IN_MEMORY = (bytes, bytearray, memoryview, Digested)


def hashed(data: InMemory) -> tuple[bytes | bytearray | memoryview, str]:
    """Blob data held in memory and its sha256: a ``Digested``'s own, else
    computed (blocking)."""
    if isinstance(data, Digested):
        return data.data, data.sha256
    return data, hashlib.sha256(data).hexdigest()


async def write_source(data: BlobData, out: BinaryIO) -> tuple[int, str]:
    """Write blob data that is not in memory (backends put that whole,
    ``hashed``) to ``out`` while hashing it, off the event loop; returns
    (size, sha256)."""
    h = hashlib.sha256()
    if isinstance(data, Path):

        def copy() -> int:
            with data.open("rb") as src:
                return _copy_hashed(src, out, h)

        n = await asyncio.to_thread(copy)
        return n, h.hexdigest()
    if isinstance(data, AsyncIterable):
        n = 0
        async for chunk in data:
            await asyncio.to_thread(_write_hashed, out, chunk, h)
            n += len(chunk)
        return n, h.hexdigest()
    raise TypeError(f"blob data must be bytes, a Path or an async iterable, not {type(data)!r}")


@dataclass
class Opened:
    """A blob opened for reading by a backend: a blocking reader, the sha256
    recorded with this very version of it, and how to let go of it."""

    reader: BinaryIO
    sha256: str
    close: Callable[[], None]


def _read_all(o: Opened) -> tuple[bytes, str]:
    buf = io.BytesIO()
    h = hashlib.sha256()
    _copy_hashed(o.reader, buf, h)
    return buf.getvalue(), h.hexdigest()


def _read_chunk(o: Opened, size: int, h: hashlib._Hash) -> bytes:
    chunk = o.reader.read(size)
    h.update(chunk)
    return chunk


def _copy_to_file(key: str, o: Opened, path: Path, expected: str) -> BlobInfo:
    # A temp file beside the target and a rename: whoever looks at ``path``
    # sees either nothing (or the old file) or the complete, verified blob.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            n = _copy_hashed(o.reader, out, h)
        verify(key, expected, h.hexdigest())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BlobInfo(key, n, h.hexdigest())


# Requests in flight at once for stat_many and put_many.
MANY_AT_ONCE = 32


class BlobStoreBase:
    """The read side, written once over each backend's blocking primitives
    (run in threads): ``_open``, ``_stat``, ``_list``, ``_delete``."""

    def _open(self, key: str) -> Opened:
        raise NotImplementedError

    def _stat(self, key: str) -> BlobInfo | None:
        raise NotImplementedError

    def _read_range(self, key: str, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def _list(self, prefix: str) -> list[str]:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    async def _put(self, key: str, data: BlobData, expected: str | None) -> BlobInfo:
        raise NotImplementedError

    async def put(self, key: str, data: BlobData, *, sha256: str | None = None) -> BlobInfo:
        return await self._put(check_key(key), data, _expected(sha256))

    async def get(self, key: str, *, sha256: str | None = None) -> bytes:
        expected = _expected(sha256)
        o = await asyncio.to_thread(self._open, check_key(key))
        try:
            data, actual = await asyncio.to_thread(_read_all, o)
        finally:
            await asyncio.to_thread(o.close)
        verify(key, expected or o.sha256, actual)
        return data

    async def get_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes of the blob from ``offset`` (fewer where it ends
        first). Not checked against the blob's sha256, which covers the whole
        of it: the caller checks the range against its own digest."""
        if offset < 0 or length < 0:
            raise ValueError(f"invalid range {offset}+{length} of blob {key!r}")
        if length == 0:
            return b""
        return await asyncio.to_thread(self._read_range, check_key(key), offset, length)

    async def stream(
        self, key: str, *, chunk_size: int = CHUNK, sha256: str | None = None
    ) -> AsyncIterator[bytes]:
        """The blob's bytes as they are read; ``BlobIntegrityError`` after the
        last chunk when they are not ``sha256`` (else the store's own)."""
        expected = _expected(sha256)
        o = await asyncio.to_thread(self._open, check_key(key))
        h = hashlib.sha256()
        try:
            while chunk := await asyncio.to_thread(_read_chunk, o, chunk_size, h):
                yield chunk
        finally:
            await asyncio.to_thread(o.close)
        verify(key, expected or o.sha256, h.hexdigest())

    async def get_to_file(self, key: str, path: Path, *, sha256: str | None = None) -> BlobInfo:
        expected = _expected(sha256)
        o = await asyncio.to_thread(self._open, check_key(key))
        try:
            return await asyncio.to_thread(_copy_to_file, key, o, Path(path), expected or o.sha256)
        finally:
            await asyncio.to_thread(o.close)

    async def stat(self, key: str) -> BlobInfo | None:
        return await asyncio.to_thread(self._stat, check_key(key))

    async def exists(self, key: str) -> bool:
        return await self.stat(key) is not None

    async def stat_many(self, keys: Sequence[str]) -> list[BlobInfo | None]:
        """``stat`` of each key, in the order given; a few round trips at once
        (a backend whose stat is a local system call does them in one go)."""
        gate = asyncio.Semaphore(MANY_AT_ONCE)

        async def one(key: str) -> BlobInfo | None:
            async with gate:
                return await self.stat(key)

        return list(await asyncio.gather(*(one(k) for k in keys)))

    async def put_many(self, items: Sequence[tuple[str, bytes, str | None]]) -> list[BlobInfo]:
        """``put`` of each (key, data, sha256), a few at once; each is stored
        whole or not at all, as by ``put``."""
        gate = asyncio.Semaphore(MANY_AT_ONCE)

        async def one(key: str, data: bytes, sha256: str | None) -> BlobInfo:
            async with gate:
                return await self.put(key, data, sha256=sha256)

        return list(await asyncio.gather(*(one(*item) for item in items)))

    async def list(self, prefix: str = "") -> list[str]:
        return sorted(await asyncio.to_thread(self._list, _check_prefix(prefix)))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, check_key(key))
