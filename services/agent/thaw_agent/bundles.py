"""Code bundles: the zip the SDK uploads at deploy, extracted once per node.

A bundle is ``bundles/<sha256>.zip`` in the blob store. The agent downloads it
(the blob store verifies the sha256), extracts it into ``<node>/bundles/<sha>/``
through a temporary directory renamed into place, so a container never sees a
half-extracted bundle, and mounts it read-only into every container of that
code version. Concurrent starts of one version share one download.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import stat
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from thaw_core import contract
from thaw_core.blob import BlobIntegrityError, BlobNotFound, BlobStore

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A bundle is source code; far more than this is a mistake or an attack (zip bomb).
MAX_EXTRACTED_BYTES = 2 << 30
MAX_MEMBERS = 100_000


class BundleError(Exception):
    """The bundle cannot be had: missing, corrupt or unsafe. The message says which."""


class BundleCache:
    def __init__(self, blob: BlobStore, root: Path) -> None:
        self._blob = blob
        self._root = root
        self._pending: dict[str, asyncio.Future[Path]] = {}

    def path(self, sha256: str) -> Path:
        return self._root / sha256

    async def ensure(self, sha256: str) -> Path:
        """The extracted bundle's directory, downloading it first if needed."""
        if not _SHA256.match(sha256):
            raise BundleError(f"invalid bundle sha256 {sha256!r}: expected 64 lowercase hex digits")
        final = self.path(sha256)
        if final.is_dir():
            return final
        pending = self._pending.get(sha256)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(sha256, final))
            self._pending[sha256] = pending
            pending.add_done_callback(lambda _: self._pending.pop(sha256, None))
        # Shielded: one caller giving up must not cancel the others' download.
        return await asyncio.shield(pending)

    async def _fetch(self, sha256: str, final: Path) -> Path:
        self._root.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        zip_path = self._root / f".{sha256}.{tag}.zip"
        tmp_dir = self._root / f".{sha256}.{tag}.d"
        try:
            try:
                await self._blob.get_to_file(contract.bundle_key(sha256), zip_path, sha256=sha256)
            except BlobNotFound:
                raise BundleError(
                    f"bundle {contract.bundle_key(sha256)} not found in the blob store"
                ) from None
            except BlobIntegrityError as e:
                raise BundleError(f"bundle {contract.bundle_key(sha256)} is corrupt: {e}") from None
            await asyncio.to_thread(extract, zip_path, tmp_dir)
            try:
                tmp_dir.rename(final)
            except OSError:
                if not final.is_dir():  # not "another agent process got there first"
                    raise
            return final
        finally:
            zip_path.unlink(missing_ok=True)
            if tmp_dir.exists():
                shutil.rmtree(tmp_dir, ignore_errors=True)

    def sweep(self) -> None:
        """Remove leftovers of downloads interrupted by a crash."""
        if not self._root.is_dir():
            return
        for p in self._root.glob(".*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def extract(zip_path: Path, dest: Path) -> None:
    """Extract ``zip_path`` into the new directory ``dest``, refusing anything
    that would land outside it, links, device files and oversized archives."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        raise BundleError(f"bundle is not a zip file: {e}") from None
    with zf:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise BundleError(f"bundle has {len(members)} entries (limit {MAX_MEMBERS})")
        total = sum(m.file_size for m in members)
        if total > MAX_EXTRACTED_BYTES:
            raise BundleError(f"bundle extracts to {total} bytes (limit {MAX_EXTRACTED_BYTES})")
        dest.mkdir(parents=True)
        for m in members:
            rel = _safe_member_path(m)
            target = dest.joinpath(*rel.parts) if rel.parts else dest
            if m.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            mode = (m.external_attr >> 16) & 0o777
            target.chmod((mode | 0o444) & 0o755 if mode else 0o644)
        # Containers run as other users one day; the tree must be readable by all.
        for d in [dest, *(p for p in dest.rglob("*") if p.is_dir())]:
            d.chmod(0o755)


def _safe_member_path(m: zipfile.ZipInfo) -> PurePosixPath:
    name = m.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith("/"):
        raise BundleError(f"bundle entry {m.filename!r} points outside the bundle")
    kind = stat.S_IFMT(m.external_attr >> 16)
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise BundleError(f"bundle entry {m.filename!r} is not a plain file or directory")
    return PurePosixPath(*(p for p in path.parts if p not in ("", ".")))
