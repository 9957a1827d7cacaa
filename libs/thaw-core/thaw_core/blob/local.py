"""The local-directory backend: blobs as plain files, the sha256 in an xattr or a sidecar."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from thaw_core.blob.base import (
    IN_MEMORY,
    BlobStoreBase,
    InMemory,
    Opened,
    _expected,
    hashed,
    verify,
    write_source,
)
from thaw_core.blob.protocol import BlobData, BlobInfo, BlobNotFound, check_key

_XATTR = "user.thaw.sha256"
_INTERNAL = ".thaw"  # root/.thaw: temp files and (without xattrs) sha256 sidecars
_STALE_TMP_S = 24 * 3600


class LocalBlobStore(BlobStoreBase):
    """Blobs as plain files under ``root`` (the key is the relative path).

    The sha256 is an extended attribute of the blob file, set on the temp
    file before the rename, so a blob and its hash appear together and a
    reader that opened the file reads the hash of that very file. Where the
    file system has no user xattrs, it is a sidecar file under
    ``root/.thaw/sha256/`` instead, written just before the blob is renamed
    into place: overwriting a key with different content then has a short
    window in which a reader sees a mismatch (and raises; it never gets bad
    data). Files are created 0600: snapshots hold process memory.
    """

    def __init__(self, root: Path, *, fsync: bool = True, use_xattr: bool | None = None) -> None:
        self.root = Path(root).absolute()
        self._tmp = self.root / _INTERNAL / "tmp"
        self._sidecars = self.root / _INTERNAL / "sha256"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._xattr = self._probe_xattr() if use_xattr is None else use_xattr
        self._sweep_tmp()

    def _probe_xattr(self) -> bool:
        fd, p = tempfile.mkstemp(dir=self._tmp)
        try:
            os.setxattr(fd, _XATTR, b"probe")
            return True
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                return False
            raise
        finally:
            os.close(fd)
            os.unlink(p)

    def _sweep_tmp(self) -> None:
        # Leftovers of writers that died mid-put. Only old ones: other
        # processes share this directory and may be writing right now.
        cutoff = time.time() - _STALE_TMP_S
        for p in self._tmp.iterdir():
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass

    def _path(self, key: str) -> Path:
        if key.split("/", 1)[0] == _INTERNAL:
            raise ValueError(f"blob keys under {_INTERNAL}/ are reserved: {key!r}")
        return self.root / key

    def _read_sha(self, key: str, fd: int | None = None) -> str:
        if self._xattr:
            try:
                return os.getxattr(fd if fd is not None else self._path(key), _XATTR).decode()
            except OSError as exc:
                if exc.errno == errno.ENODATA:
                    return ""
                raise
        try:
            return (self._sidecars / key).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return ""

    def _commit(self, key: str, tmp: Path, sha: str) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self._xattr:
            os.setxattr(tmp, _XATTR, sha.encode())
        else:
            side = self._sidecars / key
            side.parent.mkdir(parents=True, exist_ok=True)
            side_tmp = self._tmp / f"{uuid.uuid4().hex}.sha256"
            side_tmp.write_text(sha)
            os.replace(side_tmp, side)
        os.replace(tmp, dest)

    async def _put(self, key: str, data: BlobData, expected: str | None) -> BlobInfo:
        self._path(key)  # refuse reserved keys before writing anything
        if isinstance(data, IN_MEMORY):
            # In memory: every system call in one thread call. Off the loop
            # above all the file's creation, which waits on the journal
            # while other writes are flushed.
            return await asyncio.to_thread(self._put_bytes, key, data, expected)
        fd, name = await asyncio.to_thread(tempfile.mkstemp, dir=self._tmp)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                size, actual = await write_source(data, out)
                if self._fsync:
                    await asyncio.to_thread(os.fsync, out.fileno())
            verify(key, expected, actual)
            await asyncio.to_thread(self._commit, key, tmp, actual)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return BlobInfo(key, size, actual)

    def _put_bytes(self, key: str, data: InMemory, expected: str | None) -> BlobInfo:
        """``_put`` of data in memory, blocking: many small blobs in one thread call."""
        self._path(key)
        body, actual = hashed(data)
        verify(key, expected, actual)
        fd, name = tempfile.mkstemp(dir=self._tmp)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                if self._fsync:
                    os.fsync(out.fileno())
            self._commit(key, tmp, actual)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return BlobInfo(key, len(body), actual)

    async def put_many(self, items: Sequence[tuple[str, bytes, str | None]]) -> list[BlobInfo]:
        # System calls each: one thread call for all, not one (or two) per blob.
        checked = [(check_key(k), d, _expected(sha)) for k, d, sha in items]
        return await asyncio.to_thread(lambda: [self._put_bytes(*item) for item in checked])

    async def stat_many(self, keys: Sequence[str]) -> list[BlobInfo | None]:
        checked = [check_key(k) for k in keys]
        return await asyncio.to_thread(lambda: [self._stat(k) for k in checked])

    def _open(self, key: str) -> Opened:
        try:
            f = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None
        try:
            sha = self._read_sha(key, f.fileno())
        except BaseException:
            f.close()
            raise
        return Opened(f, sha, f.close)

    def _read_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with self._path(key).open("rb") as f:
                return os.pread(f.fileno(), length, offset)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None

    def _stat(self, key: str) -> BlobInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            return BlobInfo(key, st.st_size, self._read_sha(key))
        except FileNotFoundError:  # deleted between the two calls
            return None

    def _list(self, prefix: str) -> list[str]:
        # Walk only the directory the prefix points into.
        base = prefix.rpartition("/")[0]
        start = self.root / base if base else self.root
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            if Path(dirpath) == self.root and _INTERNAL in dirnames:
                dirnames.remove(_INTERNAL)
            rel = os.path.relpath(dirpath, self.root)
            for fn in filenames:
                key = fn if rel == "." else f"{rel}/{fn}".replace(os.sep, "/")
                if key.startswith(prefix):
                    out.append(key)
        return out

    def _delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            pass
        if not self._xattr:
            (self._sidecars / key).unlink(missing_ok=True)

    async def ping(self) -> None:
        if not os.access(self._tmp, os.W_OK):
            raise OSError(f"blob store {self.root} is not writable")

    async def close(self) -> None:
        pass
