"""Garbage collection of volume chunks and packs: the blob store keeps only
chunks and packs that some volume's current files name, or that were used
lately. Packs (``thaw_core.volumes.refs``) are collected as chunks are, in
``volume_packs`` against ``volume_files.packs``: a pack goes whole once no
file names any piece of it.

A chunk is collected when no row of ``volume_files`` names it (its files
were deleted, replaced, or went with ``Volume.delete``) and no commit named
or recorded it for ``grace_s`` (``volume_chunks.used_at``). In flight
commits are safe: a commit marks every chunk it names used (waiting for any
collection holding the row) before it checks that they are stored and
applies, so collection either leaves the chunk alone or removed it, blob
first, before the commit looked: the commit then finds it missing and is
refused whole, naming it, and its sender stores it again. Chunks stored but
never committed (an upload whose commit never came) have no row: a pass
records them, and the grace period counts from then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from thaw_core import contract
from thaw_core.blob import BlobStore
from thaw_core.db import Database

log = logging.getLogger("thaw.volumes.gc")

# Chunks removed in one transaction (their rows locked meanwhile).
BATCH = 1000
DELETES_AT_ONCE = 16


@dataclass(frozen=True)
class _Kind:
    """Chunks or packs: their table and key column, the column of
    ``volume_files`` that names them, and their blobs."""

    table: str
    column: str
    named_by: str
    key: Callable[[str], str]

    @property
    def prefix(self) -> str:
        return self.key("")

    @property
    def unnamed(self) -> str:
        return f"""
SELECT {self.column} AS name FROM {self.table} c
WHERE used_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (SELECT 1 FROM volume_files f WHERE f.{self.named_by} @> ARRAY[c.{self.column}])
ORDER BY {self.column} LIMIT $2
FOR UPDATE SKIP LOCKED
"""


_KINDS = (
    _Kind("volume_chunks", "digest", "chunks", contract.volume_chunk_key),
    _Kind("volume_packs", "pack", "packs", contract.volume_pack_key),
)


@dataclass(frozen=True)
class Collected:
    recorded: int  # stored chunks found without a row, recorded
    removed: int


class ChunkCollector:
    def __init__(self, db: Database, blob: BlobStore, grace_s: float) -> None:
        self.db = db
        self.blob = blob
        self.grace_s = grace_s

    async def run_once(self) -> Collected:
        recorded = removed = 0
        for kind in _KINDS:
            recorded += await self._record_unrecorded(kind)
            while (n := await self._collect_batch(kind)) > 0:
                removed += n
        if recorded or removed:
            log.info("volume chunks collected", extra={"recorded": recorded, "removed": removed})
        return Collected(recorded=recorded, removed=removed)

    async def _record_unrecorded(self, kind: _Kind) -> int:
        keys = await self.blob.list(kind.prefix)
        names = [k.removeprefix(kind.prefix) for k in keys]
        known = {
            r["name"]
            for r in await self.db.fetch(
                f"SELECT {kind.column} AS name FROM {kind.table}"
                f" WHERE {kind.column} = ANY($1::text[])",
                names,
            )
        }
        new = [d for d in names if d not in known]
        sizes = await self.blob.stat_many([kind.key(d) for d in new])
        found = {d: info.size for d, info in zip(new, sizes, strict=True) if info is not None}
        if found:
            await self.db.execute(
                f"INSERT INTO {kind.table} ({kind.column}, size)"
                " SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT DO NOTHING",
                list(found),
                list(found.values()),
            )
        return len(found)

    async def _collect_batch(self, kind: _Kind) -> int:
        """Lock a batch of unnamed, unused chunks (or packs); look again (a
        commit may have named one since the lock's snapshot); remove the
        blobs, then the rows, in that order, before the rows' locks are let go."""
        async with self.db.transaction() as con:
            locked = [r["name"] for r in await con.fetch(kind.unnamed, self.grace_s, BATCH)]
            if not locked:
                return 0
            named = {
                r["d"]
                for r in await con.fetch(
                    "SELECT d FROM unnest($1::text[]) d WHERE EXISTS"
                    f" (SELECT 1 FROM volume_files f WHERE f.{kind.named_by} @> ARRAY[d])",
                    locked,
                )
            }
            doomed = [d for d in locked if d not in named]
            gate = asyncio.Semaphore(DELETES_AT_ONCE)

            async def remove(d: str) -> None:
                async with gate:
                    await self.blob.delete(kind.key(d))

            await asyncio.gather(*(remove(d) for d in doomed))
            await con.execute(
                f"DELETE FROM {kind.table} WHERE {kind.column} = ANY($1::text[])", doomed
            )
        return len(doomed) if doomed else 0
