"""The node's volume chunk cache: each chunk a file named by its digest,
fetched from the blob store once per node, whatever volume or container
wants it. Files are materialised from it by reflink where the file system
can (a copy-on-write clone: instant, and a container writing its file never
touches the cache), else by an in-kernel copy."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from pathlib import Path

from thaw_core.blob import BlobStore
from thaw_core.contract import volume_chunk_key

# ioctl FICLONE: share the source's extents (btrfs, xfs with reflink, ...).
_FICLONE = 0x40049409


class ChunkCache:
    def __init__(self, root: Path, blob: BlobStore) -> None:
        self.root = root
        self.blob = blob
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    async def ensure(self, digests: list[str]) -> None:
        """Fetch the chunks this node does not hold yet (a few at a time)."""
        gate = asyncio.Semaphore(8)

        async def fetch(d: str) -> None:
            async with gate:
                await self.blob.get_to_file(volume_chunk_key(d), self.path(d), sha256=d)

        await asyncio.gather(
            *(fetch(d) for d in dict.fromkeys(digests) if not self.path(d).exists())
        )

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

    def materialise(self, digests: list[str], dest: Path, mode: int, mtime: float) -> int:
        """Write a file from cached chunks (blocking); answer its mtime in ns as set."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.thaw-part")
        with open(tmp, "wb") as out:
            if len(digests) == 1 and _clone(self.path(digests[0]), out.fileno()):
                pass
            else:
                for d in digests:
                    _copy(self.path(d), out.fileno())
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
        while left > 0:
            n = os.copy_file_range(f.fileno(), out_fd, left)
            if n == 0:
                break
            left -= n
