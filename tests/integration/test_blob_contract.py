"""The contract every BlobStore backend passes (run against each by the
parametrized ``blob_store`` fixture: local dir with xattrs, local dir with
sidecars, S3 on moto's server)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from thaw_core.blob import (
    BlobInfo,
    BlobIntegrityError,
    BlobNotFound,
    BlobStore,
    Digested,
    LocalBlobStore,
    S3BlobStore,
    open_blob_store,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def chunks(data: bytes, size: int = 64 << 10) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        if i % (1 << 20) == 0:
            await asyncio.sleep(0)  # a real producer yields to the loop


def corrupt(store: BlobStore, key: str, bad: bytes) -> None:
    """Replace a blob's bytes behind the store's back, keeping its recorded
    sha256: what bit rot, a torn write or a tampering hand would leave."""
    if isinstance(store, LocalBlobStore):
        # In place, so the inode (and with it the xattr) stays.
        with (store.root / key).open("r+b") as f:
            f.truncate(0)
            f.write(bad)
    elif isinstance(store, S3BlobStore):
        old = store.client.stat_object(store.bucket, key)
        recorded = old.metadata["x-amz-meta-sha256"]
        store.client.put_object(
            store.bucket, key, io.BytesIO(bad), len(bad), metadata={"sha256": recorded}
        )
    else:
        raise TypeError(f"unknown backend {type(store)}")


# ---------------------------------------------------------------- round trips


async def test_bytes_round_trip(blob_store: BlobStore) -> None:
    data = b"hello, thaw"
    info = await blob_store.put("a/b/hello.txt", data)
    assert info == BlobInfo("a/b/hello.txt", len(data), sha(data))
    assert await blob_store.get("a/b/hello.txt") == data
    assert await blob_store.stat("a/b/hello.txt") == info


async def test_empty_blob(blob_store: BlobStore) -> None:
    info = await blob_store.put("empty", b"")
    assert info.size == 0 and info.sha256 == sha(b"")
    assert await blob_store.get("empty") == b""


async def test_async_iterable_round_trip(blob_store: BlobStore) -> None:
    data = os.urandom(300_000)
    info = await blob_store.put("iter/blob", chunks(data, 7_000))
    assert info == BlobInfo("iter/blob", len(data), sha(data))
    assert await blob_store.get("iter/blob") == data


async def test_path_round_trip(blob_store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    info = await blob_store.put("files/src.bin", src)
    assert info == BlobInfo("files/src.bin", len(data), sha(data))
    # With the right hash given, too (S3 then uploads in a single pass).
    info2 = await blob_store.put("files/src2.bin", src, sha256=sha(data))
    assert info2.sha256 == sha(data)
    out = tmp_path / "out" / "copy.bin"
    assert await blob_store.get_to_file("files/src2.bin", out) == BlobInfo(
        "files/src2.bin", len(data), sha(data)
    )
    assert out.read_bytes() == data


async def test_multi_mb_streamed(blob_store: BlobStore, tmp_path: Path) -> None:
    # 12 MiB: three multipart parts at the fixture's 5 MiB part size on S3.
    data = os.urandom(12 << 20)
    info = await blob_store.put("big/blob", chunks(data, 1 << 20), sha256=sha(data))
    assert info.size == len(data) and info.sha256 == sha(data)

    got = bytearray()
    sizes = []
    async for chunk in blob_store.stream("big/blob", chunk_size=1 << 20):
        sizes.append(len(chunk))
        got += chunk
    assert bytes(got) == data
    assert max(sizes) <= 1 << 20 and len(sizes) >= 12  # really streamed, not one buffer

    out = tmp_path / "big.bin"
    assert (await blob_store.get_to_file("big/blob", out)).sha256 == sha(data)
    assert out.read_bytes() == data


async def test_overwrite_replaces(blob_store: BlobStore) -> None:
    await blob_store.put("k", b"one")
    await blob_store.put("k", b"two!")
    assert await blob_store.get("k") == b"two!"
    assert (await blob_store.stat("k")) == BlobInfo("k", 4, sha(b"two!"))


# ---------------------------------------------------------------- integrity


@pytest.mark.parametrize("kind", ["bytes", "iterable", "path"])
async def test_put_with_wrong_sha_stores_nothing(
    blob_store: BlobStore, tmp_path: Path, kind: str
) -> None:
    # Bigger than one S3 part, so a refused multipart upload is covered too.
    data = os.urandom((6 << 20) if kind != "bytes" else 1000)
    src = tmp_path / "src"
    src.write_bytes(data)
    source = {"bytes": data, "iterable": chunks(data), "path": src}[kind]
    with pytest.raises(BlobIntegrityError):
        await blob_store.put("bad/blob", source, sha256=sha(b"something else"))
    assert not await blob_store.exists("bad/blob")
    assert await blob_store.list("bad/") == []
    if isinstance(blob_store, LocalBlobStore):
        assert not any((blob_store.root / ".thaw" / "tmp").iterdir()), "temp file left behind"


async def test_put_many_and_stat_many(blob_store: BlobStore) -> None:
    items = [(f"many/{i}", os.urandom(100 + i), None) for i in range(40)]
    infos = await blob_store.put_many([(k, d, sha(d)) for k, d, _ in items])
    assert [(i.key, i.size, i.sha256) for i in infos] == [(k, len(d), sha(d)) for k, d, _ in items]
    for k, d, _ in items:
        assert await blob_store.get(k) == d
    found = await blob_store.stat_many(["many/3", "many/none", "many/39"])
    assert [None if f is None else (f.key, f.size) for f in found] == [
        ("many/3", 103), None, ("many/39", 139)
    ]  # fmt: skip
    # One with a wrong sha256 is refused and stored not at all.
    with pytest.raises(BlobIntegrityError):
        await blob_store.put_many([("many/bad", b"x", sha(b"y"))])
    assert not await blob_store.exists("many/bad")


async def test_put_with_right_sha_accepted(blob_store: BlobStore) -> None:
    data = b"content-addressed"
    info = await blob_store.put("ok", data, sha256=sha(data).upper())  # case-insensitive
    assert info.sha256 == sha(data)


async def test_digested_bytes_are_stored_under_their_digest(blob_store: BlobStore) -> None:
    """Bytes the caller has hashed already go in without a second hash, the
    caller's digest recorded, and read back checked against it."""
    data = os.urandom(3 << 20)
    info = await blob_store.put("dg", Digested(data, sha(data)), sha256=sha(data))
    assert info == BlobInfo("dg", len(data), sha(data))
    assert await blob_store.get("dg") == data
    assert (await blob_store.stat("dg")) == info
    with pytest.raises(BlobIntegrityError):  # a digest other than the one asked for
        await blob_store.put("dg2", Digested(data, sha(data)), sha256=sha(b"other"))
    assert await blob_store.stat("dg2") is None


async def test_get_with_given_sha(blob_store: BlobStore) -> None:
    await blob_store.put("g", b"data")
    assert await blob_store.get("g", sha256=sha(b"data")) == b"data"
    with pytest.raises(BlobIntegrityError):
        await blob_store.get("g", sha256=sha(b"other"))


async def test_malformed_sha_refused(blob_store: BlobStore) -> None:
    with pytest.raises(ValueError):
        await blob_store.put("m", b"x", sha256="sha256:abc")
    assert not await blob_store.exists("m")


async def test_corruption_detected(blob_store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    await blob_store.put("snap/1", data)
    bad = bytearray(data)
    bad[5000] ^= 0xFF
    await asyncio.to_thread(corrupt, blob_store, "snap/1", bytes(bad))

    out = tmp_path / "restore" / "snap.bin"
    with pytest.raises(BlobIntegrityError):
        await blob_store.get_to_file("snap/1", out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == [], "partial file left behind"

    # A file already at the target is left as it was, not half-replaced.
    out.write_bytes(b"previous")
    with pytest.raises(BlobIntegrityError):
        await blob_store.get_to_file("snap/1", out)
    assert out.read_bytes() == b"previous"

    with pytest.raises(BlobIntegrityError):
        await blob_store.get("snap/1")

    streamed = bytearray()
    with pytest.raises(BlobIntegrityError):
        async for chunk in blob_store.stream("snap/1", chunk_size=10_000):
            streamed += chunk
    assert bytes(streamed) == bytes(bad)  # it raised at the end, after the data


# ---------------------------------------------------------------- listing, deleting


async def test_exists_stat_list_delete(blob_store: BlobStore) -> None:
    keys = ["layers/aa/1", "layers/aa/2", "layers/ab", "snapshots/x", "top"]
    for k in keys:
        await blob_store.put(k, k.encode())

    assert await blob_store.list() == sorted(keys)
    assert await blob_store.list("layers/") == ["layers/aa/1", "layers/aa/2", "layers/ab"]
    assert await blob_store.list("layers/a") == ["layers/aa/1", "layers/aa/2", "layers/ab"]
    assert await blob_store.list("layers/aa") == ["layers/aa/1", "layers/aa/2"]
    assert await blob_store.list("lay") == ["layers/aa/1", "layers/aa/2", "layers/ab"]
    assert await blob_store.list("nothing/") == []
    assert await blob_store.list("nothing") == []

    assert await blob_store.exists("layers/ab")
    assert not await blob_store.exists("layers/zz")
    assert not await blob_store.exists("layers")  # a prefix is not a blob
    assert await blob_store.stat("layers/zz") is None
    assert await blob_store.stat("snapshots/x") == BlobInfo("snapshots/x", 11, sha(b"snapshots/x"))

    await blob_store.delete("layers/aa/1")
    await blob_store.delete("layers/aa/1")  # idempotent
    await blob_store.delete("never/was")
    assert not await blob_store.exists("layers/aa/1")
    assert await blob_store.list("layers/") == ["layers/aa/2", "layers/ab"]


async def test_missing_key(blob_store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(BlobNotFound):
        await blob_store.get("no/such")
    with pytest.raises(KeyError):  # BlobNotFound is a KeyError
        await blob_store.get("no/such")
    with pytest.raises(BlobNotFound):
        await blob_store.get_to_file("no/such", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(BlobNotFound):
        async for _ in blob_store.stream("no/such"):
            pass


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a//b", "a/./b", "trailing/"])
async def test_bad_keys_refused(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError):
        await blob_store.put(key, b"x")
    with pytest.raises(ValueError):
        await blob_store.get(key)
    with pytest.raises(ValueError):
        await blob_store.list("../")


async def test_concurrent_puts_and_reads(blob_store: BlobStore) -> None:
    blobs = {f"c/{i}": os.urandom(50_000 + i) for i in range(16)}
    await asyncio.gather(*(blob_store.put(k, v) for k, v in blobs.items()))
    got = await asyncio.gather(*(blob_store.get(k) for k in blobs))
    assert got == list(blobs.values())


async def test_ping(blob_store: BlobStore) -> None:
    await blob_store.ping()


# ---------------------------------------------------------------- backend specifics


async def test_local_reserved_prefix(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(ValueError):
        await store.put(".thaw/tmp/x", b"x")
    await store.put("a", b"x")
    assert await store.list() == ["a"]  # internals never listed


async def test_open_blob_store_urls(tmp_path: Path, fresh_s3_url: str) -> None:
    local = open_blob_store(f"file://{tmp_path}/b")
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "b"
    s3 = open_blob_store(fresh_s3_url)
    assert isinstance(s3, S3BlobStore) and s3.bucket.startswith("test-")
    await s3.ping()  # creates the bucket
    assert await s3.list() == []
    await s3.close()
    for bad in ("ftp://x/y", "s3://k:s@host:9000/", "file://host/path"):
        with pytest.raises(ValueError):
            open_blob_store(bad)


async def test_get_range_reads_part_of_a_blob(blob_store: BlobStore) -> None:
    data = bytes(range(256)) * 40
    await blob_store.put("range/a", data)
    assert await blob_store.get_range("range/a", 100, 300) == data[100:400]
    assert await blob_store.get_range("range/a", len(data) - 5, 50) == data[-5:]  # to its end
    assert await blob_store.get_range("range/a", 0, 0) == b""
    with pytest.raises(BlobNotFound):
        await blob_store.get_range("range/missing", 0, 10)
