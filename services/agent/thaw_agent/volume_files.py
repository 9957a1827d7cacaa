"""The node's whole-file cache for volumes: each file a mounted version
names, assembled once from the chunk cache (``volume_cache``) and never
written again, so that any number of mounts hard-link the one copy into
their read-only lower trees (``volume_overlay``) instead of copying bytes.

A hard link shares the inode, and with it the mode, mtime and owner, so a
cached file is named by all of them with its chunks: two volumes holding
the same bytes under another mode, mtime or container user get a file
each. A file no mount links any more may be evicted with the chunks
(``ChunkCache.evict``); one that a mount links is not: its link holds the
inode, so removing the cache's name would free nothing.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from thaw_core.image_users import ImageUser
from thaw_core.schema import VolumeEntry
from thaw_core.volumes.refs import ref_digest

from thaw_agent.volume_cache import ChunkCache


class FileCache:
    def __init__(self, chunks: ChunkCache) -> None:
        self.chunks = chunks
        # Beside the chunks' two-hex-digit dirs, on the same file system as
        # the mounts (the agent's state dir), which hard links need.
        self.root = chunks.root / "files"

    def path(self, entry: VolumeEntry, owner: ImageUser) -> Path:
        key = hashlib.sha256(
            f"{owner.uid}:{owner.gid}:{entry.mode & 0o7777:o}:{mtime_ns(entry)}:".encode()
            + ",".join(ref_digest(r) for r in entry.chunks).encode()
        ).hexdigest()
        return self.root / key[:2] / key

    def get(self, entry: VolumeEntry, owner: ImageUser) -> Path:
        """The cached file for ``entry``, assembled now from the chunk cache
        when this node does not hold it yet (blocking; its chunks must be
        cached: ``ChunkCache.ensure``)."""
        dest = self.path(entry, owner)
        # A size that differs is a file cut short by a crash: assembled again.
        try:
            if dest.stat().st_size == entry.size:
                return dest
        except FileNotFoundError:
            pass
        dest.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own: two mounts may assemble the same file at once
        # (identical bytes: whichever rename lands last wins, harmlessly).
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}")
        try:
            self.chunks.materialise(
                entry.chunks, tmp, entry.mode, entry.mtime, owner=(owner.uid, owner.gid)
            )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest


def mtime_ns(entry: VolumeEntry) -> int:
    """The mtime a file of ``entry`` is given (as ``ChunkCache.materialise`` sets it)."""
    return int(entry.mtime * 1e9)
