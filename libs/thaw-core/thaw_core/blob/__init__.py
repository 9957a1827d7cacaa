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

``protocol`` holds the interface and its types, ``base`` what both backends
share, ``local`` and ``s3`` the backends; ``open_blob_store`` picks one by URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from thaw_core.blob.local import LocalBlobStore
from thaw_core.blob.protocol import (
    CHUNK,
    BlobData,
    BlobInfo,
    BlobIntegrityError,
    BlobNotFound,
    BlobStore,
    Digested,
    check_key,
)

if TYPE_CHECKING:
    from thaw_core.blob.s3 import S3BlobStore

__all__ = [
    "CHUNK",
    "BlobData",
    "BlobInfo",
    "BlobIntegrityError",
    "BlobNotFound",
    "BlobStore",
    "Digested",
    "LocalBlobStore",
    "S3BlobStore",
    "check_key",
    "open_blob_store",
]


def __getattr__(name: str) -> Any:
    # The S3 backend loads the minio client (and its crypto): a few hundred ms
    # that a container's runtime, which imports the SDK, never needs.
    if name == "S3BlobStore":
        from thaw_core.blob.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        from thaw_core.blob.s3 import DEFAULT_PART_SIZE, S3BlobStore

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
            part_size=int(q.get("part_size", DEFAULT_PART_SIZE)),
        )
    raise ValueError(f"unknown blob store URL scheme in {url!r} (want file:// or s3://)")
