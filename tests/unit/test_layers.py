"""thaw_core.layers: layer ids, OCI layer tars with whiteouts, the layer cache."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import msgspec
import pytest
import zstandard
from thaw_core import layers
from thaw_core.blob import BlobIntegrityError, LocalBlobStore
from thaw_core.layers import LayerCache, LayerError

is_root = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not is_root, reason="overlay whiteouts (mknod, trusted.* xattrs) need root"
)

STEPS = [
    {"op": "pip_install", "packages": ["six"]},
    {"op": "run_commands", "commands": ["echo hi > /hello"]},
    {"op": "env", "vars": {"A": "1"}},
    {
        "op": "add_local_file",
        "remote_path": "/app/x",
        "files": [{"dest": "/app/x", "sha256": "ab" * 32}],
    },
]


def chain(base: str, steps: list[dict]) -> list[str]:
    ids, parent = [], base
    for step in steps:
        parent = layers.layer_id(parent, step)
        ids.append(parent)
    return ids


# ---------------------------------------------------------------- ids


def test_changing_one_step_changes_it_and_every_later_id_only() -> None:
    before = chain("base", STEPS)
    for k in range(len(STEPS)):
        changed = [dict(s) for s in STEPS]
        changed[k] = {**changed[k], "extra": "x"}
        after = chain("base", changed)
        assert after[:k] == before[:k], f"changing step {k} changed an earlier id"
        assert all(a != b for a, b in zip(after[k:], before[k:])), f"step {k}: a later id kept"
    assert len(set(before)) == len(before)


def test_the_content_of_an_added_file_is_part_of_its_id() -> None:
    step = STEPS[3]
    other = {**step, "files": [{"dest": "/app/x", "sha256": "cd" * 32}]}
    assert layers.layer_id("p", step) != layers.layer_id("p", other)


def test_a_different_base_changes_every_id() -> None:
    assert not set(chain("base-a", STEPS)) & set(chain("base-b", STEPS))


def test_canonical_json_ignores_key_order_and_matches_structs() -> None:
    a = {"op": "pip_install", "packages": ["six"], "pre": True}
    b = {"pre": True, "packages": ["six"], "op": "pip_install"}
    assert layers.layer_id("p", a) == layers.layer_id("p", b)

    class PipInstall(msgspec.Struct, tag_field="op", tag="pip_install", omit_defaults=True):
        packages: list[str]
        pre: bool = False
        index_url: str | None = None

    assert layers.canonical_json(PipInstall(["six"], pre=True)) == layers.canonical_json(a)


def test_base_id_depends_on_the_rootfs_marker_and_python(tmp_path: Path) -> None:
    def rootfs(name: str, marker: str) -> Path:
        (tmp_path / name / "etc").mkdir(parents=True)
        (tmp_path / name / "etc/thaw-rootfs").write_text(marker)
        return tmp_path / name

    one = rootfs("one", "suite=bookworm\npython=3.11.2\nbuilt=2026-01-01\n")
    again = rootfs("again", "suite=bookworm\npython=3.11.2\nbuilt=2026-01-01\n")
    rebuilt = rootfs("rebuilt", "suite=bookworm\npython=3.11.2\nbuilt=2026-02-02\n")
    assert layers.rootfs_python_version(one) == "3.11"
    assert layers.base_layer_id(one) == layers.base_layer_id(again)
    assert layers.base_layer_id(one) == layers.base_layer_id(one, "3.11")
    assert layers.base_layer_id(one) != layers.base_layer_id(rebuilt)
    assert layers.base_layer_id(one) != layers.base_layer_id(one, "3.12")
    with pytest.raises(LayerError, match="no finished rootfs"):
        layers.base_layer_id(tmp_path / "missing")


# ---------------------------------------------------------------- packing


def tar_names(packed: Path) -> dict[str, tarfile.TarInfo]:
    data = zstandard.ZstdDecompressor().stream_reader(packed.open("rb")).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def make_tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/conf").write_text("key=value\n")
    (root / "etc/link").symlink_to("/etc/conf")
    os.link(root / "etc/conf", root / "etc/hard")
    (root / "bin").mkdir(mode=0o755)
    (root / "bin/tool").write_bytes(b"\x7fELF")
    (root / "bin/tool").chmod(0o4755)
    (root / "empty").write_bytes(b"")
    (root / "private").mkdir()
    (root / "private").chmod(0o700)
    os.setxattr(root / "etc/conf", "user.thaw", b"\x00\xffbin")


def test_pack_gives_the_sha256_of_the_compressed_tar(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    packed = layers.pack_layer(tmp_path / "src", tmp_path / "out.tar.zst")
    assert packed.path is not None
    data = packed.path.read_bytes()
    assert packed.digest == hashlib.sha256(data).hexdigest()
    assert packed.size == len(data)


def test_an_empty_directory_packs_to_no_layer(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    packed = layers.pack_layer(tmp_path / "src", tmp_path / "out.tar.zst")
    assert packed.digest == layers.EMPTY_DIGEST and packed.path is None
    assert not (tmp_path / "out.tar.zst").exists()


def test_round_trip_keeps_content_links_modes_and_xattrs(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    packed = layers.pack_layer(tmp_path / "src", tmp_path / "l.tar.zst")
    assert packed.path is not None
    dest = tmp_path / "dest"
    used = layers.unpack_layer(packed.path, dest)
    assert used > 0
    assert (dest / "etc/conf").read_text() == "key=value\n"
    assert os.readlink(dest / "etc/link") == "/etc/conf"
    assert os.stat(dest / "etc/hard").st_ino == os.stat(dest / "etc/conf").st_ino
    assert stat.S_IMODE(os.stat(dest / "bin/tool").st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(dest / "private").st_mode) == 0o700
    assert (dest / "empty").read_bytes() == b""
    assert os.getxattr(dest / "etc/conf", "user.thaw") == b"\x00\xffbin"


@needs_root
def test_overlay_whiteouts_become_oci_whiteouts_and_back(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "etc/opaque").mkdir(parents=True)
    (upper / "etc/opaque/new").write_text("only me")
    os.setxattr(upper / "etc/opaque", layers.OPAQUE_XATTR, b"y")
    os.mknod(upper / "etc/gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    os.mknod(upper / "gone-dir", stat.S_IFCHR | 0o000, os.makedev(0, 0))

    packed = layers.pack_layer(upper, tmp_path / "l.tar.zst")
    assert packed.path is not None
    names = tar_names(packed.path)
    assert "etc/.wh.gone" in names and names["etc/.wh.gone"].isreg()
    assert ".wh.gone-dir" in names
    assert "etc/opaque/.wh..wh..opq" in names
    assert "etc/gone" not in names
    # Overlay bookkeeping never leaks into the tar.
    assert not any(
        k.startswith("SCHILY.xattr.trusted.overlay") for m in names.values() for k in m.pax_headers
    )

    dest = tmp_path / "dest"
    layers.unpack_layer(packed.path, dest)
    for whiteout in (dest / "etc/gone", dest / "gone-dir"):
        st = os.lstat(whiteout)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(dest / "etc/opaque", layers.OPAQUE_XATTR) == b"y"
    assert (dest / "etc/opaque/new").read_text() == "only me"
    assert not list(dest.rglob(".wh.*"))


def zst_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    path.write_bytes(zstandard.ZstdCompressor().compress(buf.getvalue()))
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


@pytest.mark.parametrize(
    "members",
    [
        [(entry("../evil"), b"x")],
        [(entry("/abs/evil"), b"x")],
        [(entry("ok/../../evil"), b"x")],
        # A symlink out of the layer, then a file written through it.
        [(entry("out", tarfile.SYMTYPE, "/.."), b""), (entry("out/evil"), b"x")],
        [(entry("up", tarfile.SYMTYPE, ".."), b""), (entry("up/evil"), b"x")],
        # A hard link to a file outside the layer.
        [(entry("hard", tarfile.LNKTYPE, "../outside/secret"), b"")],
        # A hard link to a symlink (it would link whatever the symlink names).
        [
            (entry("s", tarfile.SYMTYPE, "/etc/passwd"), b""),
            (entry("h", tarfile.LNKTYPE, "s"), b""),
        ],
    ],
    ids=[
        "dotdot",
        "absolute",
        "normalised-dotdot",
        "abs-symlink",
        "rel-symlink",
        "hardlink-out",
        "hardlink-symlink",
    ],
)
def test_unpack_refuses_members_that_escape_the_layer(tmp_path: Path, members: list) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/secret").write_text("secret")
    bad = zst_tar(tmp_path / "bad.tar.zst", members)
    dest = tmp_path / "work" / "dest"
    with pytest.raises(LayerError):
        layers.unpack_layer(bad, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.zst", "outside", "work"]
    assert (tmp_path / "outside/secret").read_text() == "secret"
    assert not (tmp_path / "work/evil").exists()


def test_a_symlink_replaced_by_a_file_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "victim").write_text("untouched")
    tar = zst_tar(
        tmp_path / "l.tar.zst",
        [(entry("f", tarfile.SYMTYPE, str(tmp_path / "victim")), b""), (entry("f"), b"new")],
    )
    layers.unpack_layer(tar, tmp_path / "dest")
    assert (tmp_path / "victim").read_text() == "untouched"
    assert (tmp_path / "dest/f").read_text() == "new"


def test_garbage_is_not_a_layer(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not zstd at all")
    with pytest.raises(LayerError, match="not a valid layer tar"):
        layers.unpack_layer(junk, tmp_path / "dest")


# ---------------------------------------------------------------- cache


async def stored_layer(store: LocalBlobStore, src: Path, out: Path) -> str:
    packed = layers.pack_layer(src, out)
    assert packed.path is not None
    await store.put(layers.blob_key(packed.digest), packed.path, sha256=packed.digest)
    return packed.digest


async def test_pull_unpacks_once_and_is_shared(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    make_tree(tmp_path / "src")
    digest = await stored_layer(store, tmp_path / "src", tmp_path / "l.tar.zst")
    cache = LayerCache(tmp_path / "cache")
    other_process_view = LayerCache(tmp_path / "cache")
    paths = await asyncio.gather(
        cache.pull(store, digest), other_process_view.pull(store, digest), cache.pull(store, digest)
    )
    assert len(set(paths)) == 1
    assert (paths[0] / "etc/conf").read_text() == "key=value\n"
    assert cache.has(digest)
    assert list((tmp_path / "cache/.tmp").iterdir()) == []


async def test_pull_verifies_the_digest(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    make_tree(tmp_path / "src")
    packed = layers.pack_layer(tmp_path / "src", tmp_path / "l.tar.zst")
    assert packed.path is not None
    wrong = "0" * 64  # stored under a digest that is not its sha256
    await store.put(layers.blob_key(wrong), packed.path)
    cache = LayerCache(tmp_path / "cache")
    with pytest.raises(BlobIntegrityError):
        await cache.pull(store, wrong)
    assert not cache.has(wrong) and not cache.path(wrong).exists()
    assert list((tmp_path / "cache/.tmp").iterdir()) == []


async def test_evict_removes_least_recently_used_first(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    cache = LayerCache(tmp_path / "cache")
    digests = []
    for i in range(3):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "blob").write_bytes(os.urandom(64 * 1024) + bytes([i]))
        digests.append(await stored_layer(store, src, tmp_path / f"l{i}.tar.zst"))
        await cache.pull(store, digests[-1])
    usage = cache.usage()
    for age, d in enumerate(digests):  # digests[0] the oldest use
        os.utime(tmp_path / "cache" / f"{d}.size", (1000 + age, 1000 + age))
    cache.touch(digests[0])  # now the most recent
    keep = usage[digests[0]][0] + usage[digests[2]][0]
    removed = await cache.evict(keep)
    assert removed == [digests[1]]
    assert cache.has(digests[0]) and cache.has(digests[2]) and not cache.has(digests[1])
    assert not cache.path(digests[1]).exists()
    assert await cache.evict(10**12) == []


def test_digests_are_checked(tmp_path: Path) -> None:
    cache = LayerCache(tmp_path / "cache")
    with pytest.raises(LayerError):
        cache.path("../../etc")
