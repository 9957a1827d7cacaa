"""What every blob store offers (``BlobStore``), what it answers, and what a key may be."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Digested:
    """Bytes with the sha256 this process computed of them, stored without
    hashing them again: a volume chunk is hashed once, to name it and to
    know whether the store holds it already, not once more on the way in
    (0.6 s of CPU per GiB here). Only for a digest computed of these very
    bytes: the store takes it as the blob's."""

    data: bytes
    sha256: str


BlobData = bytes | bytearray | memoryview | Digested | AsyncIterable[bytes] | Path


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    sha256: str  # lowercase hex; "" for an object that some other writer stored without one


class BlobNotFound(KeyError):
    pass


class BlobIntegrityError(Exception):
    def __init__(self, message: str, actual: str = "") -> None:
        super().__init__(message)
        # The sha256 the data had, when it was read whole ("" otherwise).
        self.actual = actual


@runtime_checkable
class BlobStore(Protocol):
    async def put(self, key: str, data: BlobData, *, sha256: str | None = None) -> BlobInfo: ...
    async def get(self, key: str, *, sha256: str | None = None) -> bytes: ...
    def stream(
        self, key: str, *, chunk_size: int = CHUNK, sha256: str | None = None
    ) -> AsyncIterator[bytes]: ...
    async def get_range(self, key: str, offset: int, length: int) -> bytes: ...
    async def get_to_file(self, key: str, path: Path, *, sha256: str | None = None) -> BlobInfo: ...
    async def stat(self, key: str) -> BlobInfo | None: ...
    async def exists(self, key: str) -> bool: ...
    async def stat_many(self, keys: Sequence[str]) -> list[BlobInfo | None]: ...
    async def put_many(self, items: Sequence[tuple[str, bytes, str | None]]) -> list[BlobInfo]: ...
    async def list(self, prefix: str = "") -> list[str]: ...
    async def delete(self, key: str) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid blob key {key!r}")
    return key
