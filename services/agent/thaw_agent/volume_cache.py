"""The node's volume chunk cache: each chunk a file named by its digest,
fetched from the blob store once per node, whatever volume or container
wants it. Files are materialised from it by reflink where the file system
can (a copy-on-write clone: instant, and a container writing its file never
touches the cache), else by an in-kernel copy: into the node's whole-file
cache (``volume_files``) once per file, or into a mount's directory where
it cannot be an overlay, and on each reload.

Both caches together are kept under ``THAW_VOLUME_CACHE_BYTES``: after a
load or reload, in the background, what was used least recently goes first
(``evict``). A whole
file that a mount hard-links stays (removing its cache name would free
nothing), and nothing goes while a load or reload is reading the caches
(``in_use``): its chunks are still wanted. A chunk evicted is fetched again
when a mount wants it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NamedTuple

from thaw_core.blob import BlobStore
from thaw_core.volumes.chunks import read_packed
from thaw_core.volumes.refs import ChunkRef, parse_ref, read_checked, ref_digest

# A pack is read whole when this many of its pieces are wanted (a mount of
# many small files), each piece by a range read below that.
PACK_WHOLE_FROM = 4
# The caches' limit when none is set (THAW_VOLUME_CACHE_BYTES).
DEFAULT_LIMIT_BYTES = 20 << 30
# Eviction stops once the caches hold this share of their limit, so that it
# does not run again at the very next load.
EVICT_TO = 0.9
# ioctl FICLONE: share the source's extents (btrfs, xfs with reflink, ...).
_FICLONE = 0x40049409


log = logging.getLogger("thaw.agent.volumes")


class Cached(NamedTuple):
    """A file of the caches, as eviction sees it."""

    last_used: float
    size: int
    path: str
    linked: bool  # a whole file that a mount hard-links: kept


class ChunkCache:
    def __init__(self, root: Path, blob: BlobStore, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.root = root
        self.blob = blob
        self.limit_bytes = limit_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        # Loads and reloads reading the caches now; eviction waits for none.
        self._users = 0
        self._evicting = asyncio.Lock()
        self._background: asyncio.Task[int] | None = None

    @contextlib.asynccontextmanager
    async def in_use(self) -> AsyncIterator[None]:
        """Around fetching chunks and building files from them: nothing is
        evicted meanwhile (a load waits for an eviction under way to end)."""
        async with self._evicting:
            self._users += 1
        try:
            yield
        finally:
            self._users -= 1

    def evict_soon(self) -> None:
        """``evict`` in the background, one at a time: a load or reload does
        not wait on the walk of a large cache."""
        if self._background is None or self._background.done():
            self._background = asyncio.create_task(self._evict_logged(), name="volume-cache-evict")

    async def evicted(self) -> None:
        """Once the background eviction under way, if any, is over."""
        if self._background is not None:
            await asyncio.shield(self._background)

    async def _evict_logged(self) -> int:
        try:
            return await self.evict()
        except Exception:  # the next load tries again
            log.exception("volume cache eviction failed")
            return 0

    async def evict(self) -> int:
        """Remove what was used least recently until the caches hold less
        than ``EVICT_TO`` of their limit; answer the bytes freed. Skipped (0)
        while a load or reload reads them: the next one's eviction catches up."""
        if self._users or self.limit_bytes <= 0:
            return 0
        held = await asyncio.to_thread(_cached, self.root)
        if sum(c.size for c in held) <= self.limit_bytes:
            return 0
        async with self._evicting:
            if self._users:
                return 0
            freed = await asyncio.to_thread(_evict, self.root, held, self.limit_bytes)
        log.info("volume caches evicted", extra={"bytes": freed, "limit": self.limit_bytes})
        return freed

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    async def ensure(self, refs: list[str]) -> None:
        """Fetch the chunks this node does not hold yet (a few at a time): a
        chunk blob as a file; a pack's pieces from one read of the pack
        where many are wanted, else each by a range read."""
        gate = asyncio.Semaphore(8)
        wanted: dict[str, ChunkRef] = {}
        for r in refs:
            d = ref_digest(r)
            if d not in wanted and not self.path(d).exists():
                wanted[d] = parse_ref(r)
        packs: dict[str, list[ChunkRef]] = {}
        for ref in wanted.values():
            if ref.pack:
                packs.setdefault(ref.pack, []).append(ref)

        async def fetch(ref: ChunkRef) -> None:
            async with gate:
                if not ref.pack:
                    await self.blob.get_to_file(ref.key, self.path(ref.digest), sha256=ref.digest)
                    return
                await asyncio.to_thread(self.keep, ref.digest, await read_packed(self.blob, ref))

        async def fetch_pack(pack: str, pieces: list[ChunkRef]) -> None:
            async with gate:
                data = await self.blob.get(pieces[0].key, sha256=pack)
            await asyncio.to_thread(self._keep_pieces, data, pieces)

        await asyncio.gather(
            *(fetch(r) for r in wanted.values() if not r.pack),
            *(fetch(r) for p in packs.values() if len(p) < PACK_WHOLE_FROM for r in p),
            *(fetch_pack(k, p) for k, p in packs.items() if len(p) >= PACK_WHOLE_FROM),
        )

    def _keep_pieces(self, data: bytes, pieces: list[ChunkRef]) -> None:
        for ref in pieces:
            piece = read_checked(ref, data[ref.offset : ref.offset + ref.length])
            self.keep(ref.digest, piece)

    def keep(self, digest: str, piece: bytes) -> None:
        """Remember a chunk this node just stored (a commit), so a later mount
        here does not fetch it back."""
        dest = self.path(digest)
        if dest.exists():
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{digest}.{os.getpid()}.part")
        tmp.write_bytes(piece)
        os.replace(tmp, dest)

    def materialise(
        self,
        refs: list[str],
        dest: Path,
        mode: int,
        mtime: float,
        owner: tuple[int, int] | None = None,
    ) -> int:
        """Write a file from cached chunks (blocking), ``owner``'s (uid, gid)
        when given; answer its mtime in ns as set."""
        digests = [ref_digest(r) for r in refs]
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.thaw-part")
        with open(tmp, "wb") as out:
            if len(digests) == 1 and _clone(self.path(digests[0]), out.fileno()):
                pass
            else:
                for d in digests:
                    _copy(self.path(d), out.fileno())
        if owner is not None:
            os.chown(tmp, *owner)  # before the chmod: a chown clears set-id bits
        os.chmod(tmp, mode & 0o7777)
        ns = int(mtime * 1e9)
        os.utime(tmp, ns=(ns, ns))
        os.replace(tmp, dest)
        return ns


def _evict(root: Path, held: list[Cached], limit_bytes: int) -> int:
    """Unlink the least recently used of ``held`` (as listed) until what is
    left is under ``EVICT_TO`` of ``limit_bytes``; the bytes freed."""
    left = sum(c.size for c in held)
    target = int(limit_bytes * EVICT_TO)
    freed = 0
    for c in sorted(held):
        if left - freed <= target:
            break
        if c.linked:
            continue
        with contextlib.suppress(FileNotFoundError):
            # A load that ended since the listing may have linked it.
            if _is_whole_file(root, c.path) and os.lstat(c.path).st_nlink > 1:
                continue
            os.unlink(c.path)
            freed += c.size
    return freed


def _is_whole_file(root: Path, path: str) -> bool:
    return path.startswith(os.path.join(root, "files") + os.sep)


def _cached(root: Path) -> list[Cached]:
    """Every chunk and whole file of the caches (not the ones being written,
    under dot names). A chunk was last used when it was last read or
    fetched; a whole file, when the last mount linking it went (its ctime)."""
    out: list[Cached] = []
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        whole = _is_whole_file(root, os.path.join(top, ""))
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            size = st.st_blocks * 512
            if whole:
                out.append(Cached(st.st_ctime, size, path, st.st_nlink > 1))
            else:
                out.append(Cached(max(st.st_atime, st.st_mtime), size, path, False))
    return out


def _clone(src: Path, out_fd: int) -> bool:
    with open(src, "rb") as f, contextlib.suppress(OSError):
        fcntl.ioctl(out_fd, _FICLONE, f.fileno())
        return True
    return False


def _copy(src: Path, out_fd: int) -> None:
    with open(src, "rb") as f:
        left = os.fstat(f.fileno()).st_size
        copy: Callable[[int, int, int], int] = os.copy_file_range
        while left > 0:
            try:
                n = copy(f.fileno(), out_fd, left)
            except OSError as e:
                # Into another kind of file system (a mount's overlay, on a
                # reload): copy_file_range refuses; sendfile copies in the kernel too.
                if e.errno != errno.EXDEV or copy is not os.copy_file_range:
                    raise
                copy = _sendfile
                continue
            if n == 0:
                break
            left -= n


def _sendfile(in_fd: int, out_fd: int, count: int) -> int:
    return os.sendfile(out_fd, in_fd, None, count)
