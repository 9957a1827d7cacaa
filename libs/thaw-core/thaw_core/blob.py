"""The blob store: image layers, snapshots, volume content, code bundles.

One Protocol, two backends: a local directory (the embedded default) and any
S3 server through the ``minio`` client. Both keep every blob's sha256 beside
it, computed while the blob is written, and check it on every read:

- ``put`` refuses data whose sha256 differs from the one the caller gave, and
  stores nothing then. A reader never sees a partial blob.
- ``get`` and ``get_to_file`` verify against the stored sha256 (or the one the
  caller gives) and raise ``BlobIntegrityError`` on a mismatch;
  ``get_to_file`` leaves no file behind then.
- ``stream`` cannot take back chunks it has yielded: it raises
  ``BlobIntegrityError`` at the end instead, so treat streamed data as
  untrusted until the iteration finished without error.

Keys are ``/``-separated relative paths: no empty, ``.`` or ``..`` component,
no leading ``/``. On the local backend a key cannot also be a "directory" of
other keys (``a`` and ``a/b``), as on a file system; S3 allows it, so don't.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import os
import re
import stat
import tempfile
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error

CHUNK = 1 << 20
BlobData = bytes | bytearray | memoryview | AsyncIterable[bytes] | Path


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    sha256: str  # lowercase hex; "" for an object that some other writer stored without one


class BlobNotFound(KeyError):
    pass


class BlobIntegrityError(Exception):
    pass


@runtime_checkable
class BlobStore(Protocol):
    async def put(self, key: str, data: BlobData, *, sha256: str | None = None) -> BlobInfo: ...
    async def get(self, key: str, *, sha256: str | None = None) -> bytes: ...
    def stream(self, key: str, *, chunk_size: int = CHUNK) -> AsyncIterator[bytes]: ...
    async def get_to_file(self, key: str, path: Path, *, sha256: str | None = None) -> BlobInfo: ...
    async def stat(self, key: str) -> BlobInfo | None: ...
    async def exists(self, key: str) -> bool: ...
    async def list(self, prefix: str = "") -> list[str]: ...
    async def delete(self, key: str) -> None: ...
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


# ---------------------------------------------------------------- shared helpers

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or "\0" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid blob key {key!r}")
    return key


def _check_prefix(prefix: str) -> str:
    # A prefix may end in "/" or in the middle of a name, but it must not
    # climb out of the store.
    if prefix.startswith("/") or "\0" in prefix or ".." in prefix.split("/"):
        raise ValueError(f"invalid blob prefix {prefix!r}")
    return prefix


def _expected(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    s = sha256.lower()
    if not _HEX64.match(s):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return s


def _verify(key: str, expected: str | None, actual: str) -> None:
    if expected and expected != actual:
        raise BlobIntegrityError(f"blob {key!r}: sha256 is {actual}, expected {expected}")


def _write_hashed(out: BinaryIO, chunk: bytes | bytearray | memoryview, h: hashlib._Hash) -> None:
    h.update(chunk)
    out.write(chunk)


def _copy_hashed(src: BinaryIO, out: BinaryIO | None, h: hashlib._Hash) -> int:
    """Copy src to out (if any) while hashing; returns the byte count."""
    n = 0
    while chunk := src.read(CHUNK):
        h.update(chunk)
        if out is not None:
            out.write(chunk)
        n += len(chunk)
    return n


def _hash_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    with path.open("rb") as f:
        n = _copy_hashed(f, None, h)
    return n, h.hexdigest()


async def _write_source(data: BlobData, out: BinaryIO) -> tuple[int, str]:
    """Write any accepted form of blob data to ``out`` while hashing it, off
    the event loop; returns (size, sha256)."""
    h = hashlib.sha256()
    if isinstance(data, (bytes, bytearray, memoryview)):
        await asyncio.to_thread(_write_hashed, out, data, h)
        return len(data), h.hexdigest()
    if isinstance(data, Path):

        def copy() -> int:
            with data.open("rb") as src:
                return _copy_hashed(src, out, h)

        n = await asyncio.to_thread(copy)
        return n, h.hexdigest()
    if isinstance(data, AsyncIterable):
        n = 0
        async for chunk in data:
            await asyncio.to_thread(_write_hashed, out, chunk, h)
            n += len(chunk)
        return n, h.hexdigest()
    raise TypeError(f"blob data must be bytes, a Path or an async iterable, not {type(data)!r}")


class _VerifyingReader:
    """A file-like for uploads that hashes what the uploader reads and raises
    before handing over the last byte when the total does not match, so that
    the upload is abandoned (or its multipart upload aborted) instead of
    completed."""

    def __init__(self, src: BinaryIO, length: int, expected: str, key: str) -> None:
        self._src, self._left, self._expected, self._key = src, length, expected, key
        self._h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if self._left == 0:
            return b""
        want = self._left if n < 0 else min(n, self._left)
        data = self._src.read(want)
        if not data:
            raise BlobIntegrityError(f"blob {self._key!r}: source ended {self._left} bytes early")
        self._h.update(data)
        self._left -= len(data)
        if self._left == 0:
            _verify(self._key, self._expected, self._h.hexdigest())
        return data


@dataclass
class _Opened:
    """A blob opened for reading by a backend: a blocking reader, the sha256
    recorded with this very version of it, and how to let go of it."""

    reader: BinaryIO
    sha256: str
    close: Callable[[], None]


def _read_all(o: _Opened) -> tuple[bytes, str]:
    buf = io.BytesIO()
    h = hashlib.sha256()
    _copy_hashed(o.reader, buf, h)
    return buf.getvalue(), h.hexdigest()


def _read_chunk(o: _Opened, size: int, h: hashlib._Hash) -> bytes:
    chunk = o.reader.read(size)
    h.update(chunk)
    return chunk


def _copy_to_file(key: str, o: _Opened, path: Path, expected: str) -> BlobInfo:
    # A temp file beside the target and a rename: whoever looks at ``path``
    # sees either nothing (or the old file) or the complete, verified blob.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            n = _copy_hashed(o.reader, out, h)
        _verify(key, expected, h.hexdigest())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BlobInfo(key, n, h.hexdigest())


class _BlobStoreBase:
    """The read side, written once over each backend's blocking primitives
    (run in threads): ``_open``, ``_stat``, ``_list``, ``_delete``."""

    def _open(self, key: str) -> _Opened:
        raise NotImplementedError

    def _stat(self, key: str) -> BlobInfo | None:
        raise NotImplementedError

    def _list(self, prefix: str) -> list[str]:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    async def _put(self, key: str, data: BlobData, expected: str | None) -> BlobInfo:
        raise NotImplementedError

    async def put(self, key: str, data: BlobData, *, sha256: str | None = None) -> BlobInfo:
        return await self._put(check_key(key), data, _expected(sha256))

    async def get(self, key: str, *, sha256: str | None = None) -> bytes:
        expected = _expected(sha256)
        o = await asyncio.to_thread(self._open, check_key(key))
        try:
            data, actual = await asyncio.to_thread(_read_all, o)
        finally:
            await asyncio.to_thread(o.close)
        _verify(key, expected or o.sha256, actual)
        return data

    async def stream(self, key: str, *, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
        o = await asyncio.to_thread(self._open, check_key(key))
        h = hashlib.sha256()
        try:
            while chunk := await asyncio.to_thread(_read_chunk, o, chunk_size, h):
                yield chunk
        finally:
            await asyncio.to_thread(o.close)
        _verify(key, o.sha256, h.hexdigest())

    async def get_to_file(self, key: str, path: Path, *, sha256: str | None = None) -> BlobInfo:
        expected = _expected(sha256)
        o = await asyncio.to_thread(self._open, check_key(key))
        try:
            return await asyncio.to_thread(_copy_to_file, key, o, Path(path), expected or o.sha256)
        finally:
            await asyncio.to_thread(o.close)

    async def stat(self, key: str) -> BlobInfo | None:
        return await asyncio.to_thread(self._stat, check_key(key))

    async def exists(self, key: str) -> bool:
        return await self.stat(key) is not None

    async def list(self, prefix: str = "") -> list[str]:
        return sorted(await asyncio.to_thread(self._list, _check_prefix(prefix)))

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, check_key(key))


# ---------------------------------------------------------------- local directory

_XATTR = "user.thaw.sha256"
_INTERNAL = ".thaw"  # root/.thaw: temp files and (without xattrs) sha256 sidecars
_STALE_TMP_S = 24 * 3600


class LocalBlobStore(_BlobStoreBase):
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
        fd, name = tempfile.mkstemp(dir=self._tmp)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                size, actual = await _write_source(data, out)
                if self._fsync:
                    await asyncio.to_thread(os.fsync, out.fileno())
            _verify(key, expected, actual)
            await asyncio.to_thread(self._commit, key, tmp, actual)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return BlobInfo(key, size, actual)

    def _open(self, key: str) -> _Opened:
        try:
            f = self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(key) from None
        try:
            sha = self._read_sha(key, f.fileno())
        except BaseException:
            f.close()
            raise
        return _Opened(f, sha, f.close)

    def _stat(self, key: str) -> BlobInfo | None:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return BlobInfo(key, st.st_size, self._read_sha(key))

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


# ---------------------------------------------------------------- S3

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NotFound"})
_META = "sha256"  # stored as x-amz-meta-sha256
_DEFAULT_PART = 16 << 20


class S3BlobStore(_BlobStoreBase):
    """Blobs as objects of one bucket, the sha256 in user metadata. S3 makes
    an object visible only once its upload completes, which gives atomicity;
    the hash is known before the upload starts (computed first, given by the
    caller, or computed while spooling an async iterable to a temp file) so
    that it can go into the metadata and a mismatch stores nothing.

    The minio client is synchronous: every call runs in a thread. ``client``
    and ``bucket`` are public for tools and tests."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = True,
        region: str | None = None,
        part_size: int = _DEFAULT_PART,
        spool_dir: Path | None = None,
    ) -> None:
        # Our own PoolManager, so that close() can release its sockets
        # through a public API. Settings follow minio's defaults, with fewer
        # retries so that an unreachable server is reported in seconds.
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=300),
            maxsize=16,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=urllib3.Retry(
                total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self.client = Minio(
            endpoint, access_key, secret_key, secure=secure, region=region, http_client=self._http
        )
        self.bucket = bucket
        self.part_size = part_size
        self._spool_dir = spool_dir
        self._bucket_ready = False

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as exc:
                # Another process created it between our two calls.
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
        self._bucket_ready = True

    def _upload(self, key: str, src: BinaryIO, length: int, sha: str) -> None:
        self.client.put_object(
            self.bucket,
            key,
            _VerifyingReader(src, length, sha, key),  # type: ignore[arg-type]
            length,
            part_size=self.part_size,
            metadata={_META: sha},
        )

    async def _put(self, key: str, data: BlobData, expected: str | None) -> BlobInfo:
        await asyncio.to_thread(self._ensure_bucket)
        if isinstance(data, (bytes, bytearray, memoryview)):
            actual = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
            _verify(key, expected, actual)
            await asyncio.to_thread(self._upload, key, io.BytesIO(data), len(data), actual)
            return BlobInfo(key, len(data), actual)
        if isinstance(data, Path):
            # With a given hash: one pass, the reader refuses the last part on
            # a mismatch. Without: hash first, as metadata precedes the data.
            # Either way a file that changes under us is caught.
            size = data.stat().st_size
            sha = expected
            if sha is None:
                size, sha = await asyncio.to_thread(_hash_file, data)
            with data.open("rb") as f:
                await asyncio.to_thread(self._upload, key, f, size, sha)
            return BlobInfo(key, size, sha)
        # An async iterable: its length and hash are known only at its end.
        with tempfile.TemporaryFile(dir=self._spool_dir) as spool:
            size, actual = await _write_source(data, spool)
            _verify(key, expected, actual)
            spool.seek(0)
            await asyncio.to_thread(self._upload, key, spool, size, actual)  # type: ignore[arg-type]
        return BlobInfo(key, size, actual)

    def _open(self, key: str) -> _Opened:
        try:
            resp = self.client.get_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                raise BlobNotFound(key) from None
            raise

        def close() -> None:
            resp.close()
            resp.release_conn()

        # The hash from this response's own headers: the one of the version
        # whose bytes we are about to read.
        return _Opened(resp, resp.headers.get(f"x-amz-meta-{_META}", ""), close)  # type: ignore[arg-type]

    def _stat(self, key: str) -> BlobInfo | None:
        try:
            st = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                return None
            raise
        meta = st.metadata or {}
        return BlobInfo(key, st.size or 0, meta.get(f"x-amz-meta-{_META}", ""))

    def _list(self, prefix: str) -> list[str]:
        try:
            return [
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name is not None
            ]
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                return []
            raise

    def _delete(self, key: str) -> None:
        try:
            self.client.remove_object(self.bucket, key)  # S3 deletes are idempotent already
        except S3Error as exc:
            if exc.code not in _NOT_FOUND_CODES:
                raise

    async def ping(self) -> None:
        # Reachable, credentials accepted, bucket there (made if missing).
        self._bucket_ready = False
        await asyncio.to_thread(self._ensure_bucket)

    async def close(self) -> None:
        self._http.clear()


# ---------------------------------------------------------------- factory


def open_blob_store(url: str) -> BlobStore:
    """``file:///abs/path`` or ``s3://ACCESS:SECRET@host:port/bucket`` with
    optional query ``secure=false`` (default true), ``region=``,
    ``part_size=`` (bytes, at least 5 MiB)."""
    u = urlsplit(url)
    if u.scheme == "file":
        if u.netloc not in ("", "localhost"):
            raise ValueError(f"file URL must be file:///absolute/path, got {url!r}")
        return LocalBlobStore(Path(unquote(u.path)))
    if u.scheme == "s3":
        bucket = u.path.strip("/")
        if not u.hostname or not bucket or "/" in bucket:
            raise ValueError(f"S3 URL must be s3://KEY:SECRET@host[:port]/bucket, got {url!r}")
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        endpoint = f"{host}:{u.port}" if u.port else host
        return S3BlobStore(
            endpoint,
            unquote(u.username or ""),
            unquote(u.password or ""),
            bucket,
            secure=q.get("secure", "true").lower() not in ("false", "0", "no"),
            region=q.get("region") or None,
            part_size=int(q.get("part_size", _DEFAULT_PART)),
        )
    raise ValueError(f"unknown blob store URL scheme in {url!r} (want file:// or s3://)")
