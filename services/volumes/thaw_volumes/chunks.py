"""A commit's chunks are in the blob store, and add up to its files."""

from __future__ import annotations

import asyncio

from thaw_core.blob import BlobStore
from thaw_core.contract import volume_chunk_key
from thaw_core.schema import VolumeEntry
from thaw_core.volumes import CHUNK_SIZE, VolumeError

from thaw_volumes.store import VolumeStore

# Blob stat calls in flight at once for chunks not recorded yet.
STAT_CONCURRENCY = 32


async def check_chunks(store: VolumeStore, blob: BlobStore, changes: list[VolumeEntry]) -> None:
    """Refuse a commit naming a chunk that is not stored, or whose chunks do
    not make its file: every chunk but the last is CHUNK_SIZE bytes, and
    together they are the file's size. Chunks found in the store are recorded."""
    digests = {d for e in changes for d in e.chunks}
    if not digests:
        return
    sizes = await store.chunk_sizes(digests)
    unknown = digests - sizes.keys()
    gate = asyncio.Semaphore(STAT_CONCURRENCY)

    async def stat(d: str) -> tuple[str, int | None]:
        async with gate:
            info = await blob.stat(volume_chunk_key(d))
        return d, None if info is None else info.size

    found = dict(await asyncio.gather(*(stat(d) for d in unknown)))
    absent = sorted(d for d, size in found.items() if size is None)
    if absent:
        where = next(e.path for e in changes if absent[0] in e.chunks)
        raise VolumeError(
            "bad_request",
            f"{len(absent)} chunk(s) are not stored (first: {absent[0]} of {where!r});"
            " store chunks before committing; nothing was committed",
        )
    new = {d: size for d, size in found.items() if size is not None}
    if new:
        await store.record_chunks(new)
    sizes.update(new)
    for e in changes:
        if e.kind != "file":
            continue
        got = [sizes[d] for d in e.chunks]
        if sum(got) != e.size or any(n != CHUNK_SIZE for n in got[:-1]):
            raise VolumeError(
                "bad_request",
                f"{e.path!r}: its chunks hold {sum(got)} bytes, not {e.size}; nothing was committed",
            )
