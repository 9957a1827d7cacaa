"""One volume materialised in a directory, and its commits and reloads.

``load`` writes the volume's current version into the directory from the
node's chunk cache. ``commit`` finds what changed since by size and mtime
(hashing only those files), stores their new chunks and sends one commit
with the written and deleted paths; ``reload`` brings in what others
committed since the version loaded, without a full walk of the volume.
Files are whole: a reload replaces a file by a rename, never in place.
What it writes (and the directories on the way) belongs to ``owner``, the
container's process user, so a function on an image with a ``USER`` can
change its volume's files.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from thaw_core.image_users import ROOT, ImageUser
from thaw_core.schema import VolumeEntry, VolumeInfo
from thaw_core.volumes import ChunkUploader, VolumesClient

from thaw_agent.volume_cache import ChunkCache

# Files hashed and stored at once by a commit: small files are many round trips.
UPLOADS_AT_ONCE = 16


@dataclass(frozen=True)
class OnDisk:
    """What a path held when it was last loaded or committed."""

    size: int
    mtime_ns: int
    chunks: tuple[str, ...]


class MountedVolume:
    def __init__(
        self,
        client: VolumesClient,
        cache: ChunkCache,
        volume: VolumeInfo,
        root: Path,
        owner: ImageUser = ROOT,
    ) -> None:
        self.client = client
        self.cache = cache
        self.volume = volume
        self.root = root
        self.owner = owner
        self.version = 0
        self._known: dict[str, OnDisk] = {}
        self._uploader = ChunkUploader(client.blob)

    async def load(self) -> None:
        """Materialise the volume's current version into ``root``."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._own(self.root)
        version, entries = await self.client.entries(self.volume.volume_id)
        await self._apply(entries)
        self.version = version

    async def reload(self) -> int:
        """Bring in what was committed since the loaded version; answer how
        many paths changed."""
        version, entries = await self.client.entries(
            self.volume.volume_id, since_version=self.version
        )
        await self._apply(entries)
        self.version = max(self.version, version)
        return len(entries)

    async def _apply(self, entries: list[VolumeEntry]) -> None:
        await self.cache.ensure([d for e in entries if not e.deleted for d in e.chunks])

        def write() -> None:
            for e in entries:
                target = self.root / e.path
                known = self._known.get(e.path)
                if e.deleted:
                    self._known.pop(e.path, None)
                    _remove(target)
                elif e.kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                elif known is None or known.chunks != tuple(e.chunks) or not target.exists():
                    if target.is_dir() and not target.is_symlink():
                        _remove(target)
                    ns = self.cache.materialise(e.chunks, target, e.mode, e.mtime)
                    self._known[e.path] = OnDisk(e.size, ns, tuple(e.chunks))
                if not e.deleted:
                    self._own(target)

        await asyncio.to_thread(write)

    def _own(self, path: Path) -> None:
        """``path`` and the directories above it, up to ``root``, the owner's."""
        if self.owner == ROOT:
            return
        while True:
            os.lchown(path, self.owner.uid, self.owner.gid)
            if path == self.root or self.root not in path.parents:
                return
            path = path.parent

    def changes(self) -> tuple[list[tuple[str, os.stat_result]], list[str]]:
        """Files written (new, or another size or mtime) and paths gone since
        they were loaded or committed (blocking: a walk of the directory)."""
        written: list[tuple[str, os.stat_result]] = []
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in filenames:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                st = os.lstat(os.path.join(dirpath, name))
                if not stat.S_ISREG(st.st_mode) or name.endswith(".thaw-part"):
                    continue
                seen.add(rel)
                known = self._known.get(rel)
                if known is None or known.size != st.st_size or known.mtime_ns != st.st_mtime_ns:
                    written.append((rel, st))
        gone = [p for p in self._known if p not in seen]
        return written, gone

    async def commit(self) -> VolumeInfo | None:
        """Commit what changed; None when nothing did."""
        written, gone = await asyncio.to_thread(self.changes)
        if not written and not gone:
            return None
        gate = asyncio.Semaphore(UPLOADS_AT_ONCE)

        async def upload(rel: str, st: os.stat_result) -> VolumeEntry:
            async with gate:
                size, chunks = await self._uploader.upload_file(self.root / rel)
            return VolumeEntry(
                path=rel, size=size, chunks=chunks, mode=st.st_mode & 0o7777,
                mtime=st.st_mtime_ns / 1e9,
            )  # fmt: skip

        entries = await asyncio.gather(*(upload(rel, st) for rel, st in written))
        stored = {
            e.path: OnDisk(e.size, st.st_mtime_ns, tuple(e.chunks))
            for e, (_, st) in zip(entries, written, strict=True)
        }
        info = await self.client.commit(
            self.volume.volume_id, list(entries), gone, base_version=self.version
        )
        self._known.update(stored)
        for p in gone:
            self._known.pop(p, None)
        if info.version == self.version + 1:
            # Nobody committed in between: this directory is that version.
            self.version = info.version
        return info


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        for dirpath, dirnames, filenames in os.walk(target, topdown=False):
            for name in filenames:
                os.unlink(os.path.join(dirpath, name))
            for name in dirnames:
                os.rmdir(os.path.join(dirpath, name))
        target.rmdir()
    else:
        target.unlink(missing_ok=True)
