"""The node's volume chunk cache: each chunk a file named by its digest,
fetched from the blob store once per node, whatever volume or container
wants it. Files are materialised from it by reflink where the file system
can (a copy-on-write clone: instant, and a container writing its file never
touches the cache), else by an in-kernel copy: into the node's whole-file
cache (``volume_files``) once per file, or into a mount's directory where
it cannot be an overlay, and on each reload."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from thaw_core.blob import BlobStore
from thaw_core.volumes.chunks import read_packed
from thaw_core.volumes.refs import ChunkRef, parse_ref, read_checked, ref_digest

# A pack is read whole when this many of its pieces are wanted (a mount of
# many small files), each piece by a range read below that.
PACK_WHOLE_FROM = 4
# ioctl FICLONE: share the source's extents (btrfs, xfs with reflink, ...).
_FICLONE = 0x40049409


class ChunkCache:
    def __init__(self, root: Path, blob: BlobStore) -> None:
        self.root = root
        self.blob = blob
        self.root.mkdir(parents=True, exist_ok=True)

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
