"""The node's cache of unpacked layers, and an image's lower dirs from it.

``LayerCache`` keeps unpacked layers keyed by digest: pulls are
digest-verified, atomic (unpacked aside, then renamed) and shared between
processes (one file lock per digest), and ``evict`` trims it to a size, least
recently used first, never removing a layer that a mounted overlay uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thaw_core.blob import BlobStore
from thaw_core.layers.ids import EMPTY_DIGEST, LayerError, blob_key, local_base
from thaw_core.layers.mounts import overlay_lowerdirs_in_use
from thaw_core.layers.tar import disk_usage, unpack_layer
from thaw_core.metrics import cache_lookup
from thaw_core.schema import LayerRef


class LayerCache:
    """Unpacked layers on this node, ``<root>/<digest>/``, shared by every
    process that points at the same ``root`` (builder, agent).

    ``<root>/<digest>.size`` holds the layer's disk usage; its mtime is the
    layer's last use (the LRU clock). Work in progress lives in ``<root>/.tmp``
    and file locks in ``<root>/.locks``; keep ``root`` on the file system
    where overlay upper dirs are made, so that ``adopt`` is a rename.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        self.locks = root / ".locks"
        for d in (self.root, self.tmp, self.locks):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        _check_digest(digest)
        return self.root / digest

    def has(self, digest: str) -> bool:
        return (self.root / f"{_check_digest(digest)}.size").exists()

    def touch(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.root / f"{digest}.size")

    def scratch(self, prefix: str = "") -> Path:
        """A fresh directory on the cache's file system (for ``adopt``)."""
        d = self.tmp / f"{prefix}{uuid.uuid4().hex}"
        d.mkdir()
        return d

    async def pull(self, blob: BlobStore, digest: str) -> Path:
        """The unpacked layer ``digest``, fetched from ``blob`` and verified
        against the digest when this node does not have it yet."""
        hit = self.has(digest)
        cache_lookup("layer", hit)
        if hit:
            self.touch(digest)
            return self.path(digest)
        async with self._locked(digest):
            if self.has(digest):  # another process pulled it meanwhile
                self.touch(digest)
                return self.path(digest)
            work = self.scratch("pull-")
            try:
                tar = work / "layer.tar.zst"
                await blob.get_to_file(blob_key(digest), tar, sha256=digest)
                size = await asyncio.to_thread(unpack_layer, tar, work / "fs")
                tar.unlink()
                return self._commit(digest, work / "fs", size)
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)

    async def adopt(self, digest: str, tree: Path) -> Path:
        """Move ``tree`` (an unpacked layer this process made, on the cache's
        file system) into the cache as ``digest``; drops it if already there."""
        async with self._locked(digest):
            if self.has(digest):
                await asyncio.to_thread(shutil.rmtree, tree, True)
                self.touch(digest)
                return self.path(digest)
            size = await asyncio.to_thread(disk_usage, tree)
            return self._commit(digest, tree, size)

    def _commit(self, digest: str, tree: Path, size: int) -> Path:
        final = self.path(digest)
        if final.exists():  # a leftover of a crash between rename and .size
            shutil.rmtree(final)
        os.rename(tree, final)
        stamp = self.root / f"{digest}.size"
        tmp_stamp = self.tmp / f"{digest}.size.{uuid.uuid4().hex}"
        tmp_stamp.write_text(str(size))
        os.rename(tmp_stamp, stamp)  # the .size file's presence means "complete"
        return final

    def usage(self) -> dict[str, tuple[int, float]]:
        """digest -> (bytes on disk, last use) of every complete layer."""
        out: dict[str, tuple[int, float]] = {}
        for stamp in self.root.glob("*.size"):
            with contextlib.suppress(OSError, ValueError):
                out[stamp.name[: -len(".size")]] = (
                    int(stamp.read_text() or 0),
                    stamp.stat().st_mtime,
                )
        return out

    async def evict(self, max_bytes: int) -> list[str]:
        """Remove least recently used layers until the cache holds at most
        ``max_bytes``; layers that a mounted overlay uses are kept. Returns
        the digests removed."""
        usage = self.usage()
        total = sum(size for size, _ in usage.values())
        if total <= max_bytes:
            return []
        in_use = await asyncio.to_thread(overlay_lowerdirs_in_use)
        removed: list[str] = []
        for digest, (size, _) in sorted(usage.items(), key=lambda kv: kv[1][1]):
            if total <= max_bytes:
                break
            if str(self.path(digest)) in in_use:
                continue
            async with self._locked(digest):
                stamp = self.root / f"{digest}.size"
                if not stamp.exists():
                    continue
                stamp.unlink()  # no longer "complete": nobody picks it up now
                trash = self.tmp / f"evict-{digest}-{uuid.uuid4().hex[:6]}"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.path(digest), trash)
            await asyncio.to_thread(shutil.rmtree, trash, True)
            total -= size
            removed.append(digest)
        return removed

    def sweep(self) -> None:
        """Remove what crashed pulls and builds left in ``.tmp`` (call at start-up,
        when no other process of this cache is working)."""
        for entry in self.tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def _locked(self, digest: str) -> Any:
        """An exclusive flock on ``.locks/<digest>``, polled so that waiting
        never blocks the event loop and can be cancelled."""
        fd = os.open(self.locks / digest, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            delay = 0.01
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.2)
            yield
        finally:
            os.close(fd)  # releases the lock


async def lowerdirs(
    refs: Sequence[LayerRef], cache: LayerCache, blob: BlobStore, *, rootfs: Path | None = None
) -> list[Path]:
    """The unpacked layers ``refs`` (an ``ImageManifest.layers``), base first
    (``overlay_mount``'s order): the local rootfs for a matching base, the
    cache for the rest, pulling what is missing."""
    dirs: list[Path] = []
    for ref in refs:
        if ref.digest == EMPTY_DIGEST:
            continue
        here = local_base(ref, rootfs)
        dirs.append(here if here is not None else await cache.pull(blob, ref.digest))
    return dirs


def _check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise LayerError(f"not a sha256 digest: {digest!r}")
    return digest
