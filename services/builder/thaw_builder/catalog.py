"""The image catalog in Postgres (migration 0003): which layers exist,
which images are built, and a lock per layer so that a layer is built once
even when several builds (on any builder replica) need it at the same time.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
from thaw_core.db import Database
from thaw_core.layers import ImageManifest


@dataclass(frozen=True)
class StoredLayer:
    layer_id: str
    digest: str  # "" for a step that changed no file
    size: int


class Catalog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def layer(self, layer_id: str) -> StoredLayer | None:
        row = await self.db.fetchrow(
            "SELECT digest, size FROM layers WHERE layer_id = $1", layer_id
        )
        return StoredLayer(layer_id, row["digest"], row["size"]) if row else None

    async def add_layer(self, layer: StoredLayer) -> None:
        # Idempotent: a retried insert (or two builders racing past the lock
        # after a lost connection) keeps the first row.
        await self.db.execute(
            "INSERT INTO layers (layer_id, digest, size) VALUES ($1, $2, $3) "
            "ON CONFLICT (layer_id) DO NOTHING",
            layer.layer_id,
            layer.digest,
            layer.size,
        )

    async def image(self, image_id: str) -> ImageManifest | None:
        manifest = await self.db.fetchval(
            "SELECT manifest FROM images WHERE image_id = $1", image_id
        )
        # The json codec hands back Python objects; convert into the Struct.
        return msgspec.convert(manifest, ImageManifest) if manifest is not None else None

    async def add_image(self, manifest: ImageManifest) -> None:
        await self.db.execute(
            "INSERT INTO images (image_id, manifest) VALUES ($1, $2) "
            "ON CONFLICT (image_id) DO NOTHING",
            manifest.image_id,
            msgspec.to_builtins(manifest),
        )

    @contextlib.asynccontextmanager
    async def layer_lock(self, layer_id: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """Hold the lock of ``layer_id`` (a Postgres session advisory lock, so
        it is shared by every builder on this database). Yields False, without
        waiting, when ``wait`` is False and someone else holds it. The lock
        dies with its connection: a builder that crashes never blocks others."""
        key = _lock_key(layer_id)
        async with self.db.pool.acquire() as con:
            if wait:
                await con.execute("SELECT pg_advisory_lock($1)", key)
            elif not await con.fetchval("SELECT pg_try_advisory_lock($1)", key):
                yield False
                return
            try:
                yield True
            finally:
                with contextlib.suppress(Exception):
                    await con.execute("SELECT pg_advisory_unlock($1)", key)


def _lock_key(layer_id: str) -> int:
    # A signed 64-bit key; the prefix keeps it apart from other users of advisory locks.
    digest = hashlib.sha256(b"thaw.layer:" + layer_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
