"""The agent's code bundle cache, on a real S3 server: downloads verified,
extracted once, and nothing unsafe in a zip ever lands on the node."""

from __future__ import annotations

import asyncio
import hashlib
import io
import stat
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from thaw_agent.bundles import BundleCache, BundleError
from thaw_core.blob import BlobStore, open_blob_store
from thaw_core.contract import bundle_key


@pytest.fixture
async def blob(s3_url: str) -> AsyncIterator[BlobStore]:
    store = open_blob_store(s3_url)
    yield store
    await store.close()


def make_zip(entries: dict[str, str], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in entries.items():
            z.writestr(name, text)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, "/etc/passwd")
    return buf.getvalue()


async def upload(blob: BlobStore, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    await blob.put(bundle_key(sha), data, sha256=sha)
    return sha


async def test_a_bundle_is_extracted_once_and_served_from_the_cache(
    blob: BlobStore, tmp_path: Path
) -> None:
    sha = await upload(blob, make_zip({"app.py": "x = 1\n", "pkg/util.py": "y = 2\n"}))
    cache = BundleCache(blob, tmp_path / "bundles")

    first, second = await asyncio.gather(cache.ensure(sha), cache.ensure(sha))

    assert first == second == tmp_path / "bundles" / sha
    assert (first / "app.py").read_text() == "x = 1\n"
    assert (first / "pkg" / "util.py").read_text() == "y = 2\n"
    # No temporary files are left beside it.
    assert sorted(p.name for p in (tmp_path / "bundles").iterdir()) == [sha]
    # Served from the node's cache once extracted: the blob store is not asked again.
    await blob.delete(bundle_key(sha))
    assert await cache.ensure(sha) == first


@pytest.mark.parametrize(
    ("entries", "symlink", "error"),
    [
        ({"../escape.py": "x"}, None, "outside the bundle"),
        ({"/etc/cron.d/evil": "x"}, None, "outside the bundle"),
        ({"app.py": "x"}, "link", "not a plain file"),
    ],
)
async def test_an_unsafe_bundle_is_refused_and_leaves_nothing(
    blob: BlobStore, tmp_path: Path, entries: dict[str, str], symlink: str | None, error: str
) -> None:
    sha = await upload(blob, make_zip(entries, symlink=symlink))
    cache = BundleCache(blob, tmp_path / "bundles")

    with pytest.raises(BundleError, match=error):
        await cache.ensure(sha)

    assert list((tmp_path / "bundles").iterdir()) == []
    assert not (tmp_path / "escape.py").exists()


async def test_missing_corrupt_and_misnamed_bundles_say_what_is_wrong(
    blob: BlobStore, tmp_path: Path
) -> None:
    cache = BundleCache(blob, tmp_path / "bundles")
    with pytest.raises(BundleError, match="invalid bundle sha256"):
        await cache.ensure("../../etc")
    with pytest.raises(BundleError, match="not found"):
        await cache.ensure("a" * 64)
    # Stored under the sha256 of other content: the download does not verify.
    claimed = hashlib.sha256(b"what the SDK uploaded").hexdigest()
    await blob.put(bundle_key(claimed), make_zip({"app.py": "tampered = True\n"}))
    with pytest.raises(BundleError, match="corrupt"):
        await cache.ensure(claimed)
    # Not a zip at all.
    sha = await upload(blob, b"this is not a zip file")
    with pytest.raises(BundleError, match="not a zip"):
        await cache.ensure(sha)
    assert list((tmp_path / "bundles").iterdir()) == []
