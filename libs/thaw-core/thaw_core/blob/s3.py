"""The S3 backend: objects of one bucket through the ``minio`` client, the
sha256 in user metadata."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

import certifi
import urllib3
from minio import Minio
from minio.error import S3Error

from thaw_core.blob.base import (
    IN_MEMORY,
    BlobStoreBase,
    Opened,
    hash_file,
    hashed,
    verify,
    write_source,
)
from thaw_core.blob.protocol import BlobData, BlobInfo, BlobIntegrityError, BlobNotFound


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
            verify(self._key, self._expected, self._h.hexdigest())
        return data


_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NotFound"})
_META = "sha256"  # stored as x-amz-meta-sha256
DEFAULT_PART_SIZE = 16 << 20


class S3BlobStore(BlobStoreBase):
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
        part_size: int = DEFAULT_PART_SIZE,
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
        if isinstance(data, IN_MEMORY):
            body, actual = await asyncio.to_thread(hashed, data)
            verify(key, expected, actual)
            await asyncio.to_thread(self._upload, key, io.BytesIO(body), len(body), actual)
            return BlobInfo(key, len(body), actual)
        if isinstance(data, Path):
            # With a given hash: one pass, the reader refuses the last part on
            # a mismatch. Without: hash first, as metadata precedes the data.
            # Either way a file that changes under us is caught.
            size = data.stat().st_size
            sha = expected
            if sha is None:
                size, sha = await asyncio.to_thread(hash_file, data)
            with data.open("rb") as f:
                await asyncio.to_thread(self._upload, key, f, size, sha)
            return BlobInfo(key, size, sha)
        # An async iterable: its length and hash are known only at its end.
        with tempfile.TemporaryFile(dir=self._spool_dir) as spool:
            size, actual = await write_source(data, spool)
            verify(key, expected, actual)
            spool.seek(0)
            await asyncio.to_thread(self._upload, key, spool, size, actual)  # type: ignore[arg-type]
        return BlobInfo(key, size, actual)

    def _open(self, key: str) -> Opened:
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
        return Opened(resp, resp.headers.get(f"x-amz-meta-{_META}", ""), close)  # type: ignore[arg-type]

    def _read_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            resp = self.client.get_object(self.bucket, key, offset=offset, length=length)
        except S3Error as exc:
            if exc.code in _NOT_FOUND_CODES:
                raise BlobNotFound(key) from None
            if exc.code == "InvalidRange":  # from at or past the end
                return b""
            raise
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

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
