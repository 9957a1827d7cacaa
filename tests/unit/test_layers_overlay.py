"""Unpacked layers stack as overlay lowerdirs: whiteouts and opaque dirs of an
upper layer hide what the layers below have, and a mounted layer is never
evicted. Needs root (mount, mknod)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from thaw_core import layers
from thaw_core.blob import LocalBlobStore
from thaw_core.layers import LayerCache, LayerError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting overlays needs root")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    made: list[Path] = []
    yield made
    for target in reversed(made):
        layers.unmount(target)


def write(root: Path, rel: str, text: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


async def test_whiteouts_of_an_upper_layer_hide_lower_files(
    tmp_path: Path, mounts: list[Path]
) -> None:
    base = tmp_path / "base"
    for rel in ("keep", "gone", "dir/x", "dir/y", "other/z"):
        write(base, rel, rel)

    # What a build step leaves in its overlay upper dir: it deleted /gone and
    # /other/z, replaced /dir wholesale, and changed /keep.
    build = tmp_path / "build"
    for d in ("upper", "work", "root"):
        (build / d).mkdir(parents=True)
    layers.overlay_mount([base], build / "root", upper=build / "upper", work=build / "work")
    mounts.append(build / "root")
    root = build / "root"
    (root / "gone").unlink()
    (root / "other/z").unlink()
    for name in os.listdir(root / "dir"):
        (root / "dir" / name).unlink()
    (root / "dir").rmdir()
    (root / "dir").mkdir()
    write(root, "dir/new", "new")
    write(root, "keep", "changed")
    layers.unmount(root)
    mounts.pop()

    # Packed as an OCI tar, stored, pulled into a cache on "another node".
    store = LocalBlobStore(tmp_path / "blobs")
    packed = layers.pack_layer(build / "upper", tmp_path / "layer.tar.zst")
    assert packed.path is not None
    await store.put(layers.blob_key(packed.digest), packed.path, sha256=packed.digest)
    cache = LayerCache(tmp_path / "cache")
    unpacked = await cache.pull(store, packed.digest)

    # A tiny top layer, so that the image mounts read-only (two lowerdirs).
    top = tmp_path / "top"
    write(top, "etc/motd", "hello")

    image = tmp_path / "image"
    image.mkdir()
    layers.overlay_mount([base, unpacked, top], image)
    mounts.append(image)
    assert (image / "keep").read_text() == "changed"
    assert not (image / "gone").exists()
    assert sorted(os.listdir(image / "dir")) == ["new"]
    assert os.listdir(image / "other") == []
    assert (image / "etc/motd").read_text() == "hello"
    with pytest.raises(OSError):
        (image / "keep").write_text("read-only")

    # A layer in use by a mounted overlay is kept, whatever its age.
    os.utime(tmp_path / "cache" / f"{packed.digest}.size", (1, 1))
    assert await cache.evict(0) == []
    assert cache.has(packed.digest)
    layers.unmount(image)
    mounts.pop()
    assert await cache.evict(0) == [packed.digest]
    assert not unpacked.exists()


def test_overlay_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(LayerError, match="two lower dirs"):
        layers.overlay_mount([tmp_path], tmp_path)
    with pytest.raises(LayerError, match="both upper and work"):
        layers.overlay_mount([tmp_path], tmp_path, upper=tmp_path)
    with pytest.raises(LayerError, match="may not contain"):
        layers.overlay_mount([tmp_path / "a:b", tmp_path], tmp_path)
    with pytest.raises(LayerError, match="more than the kernel"):
        layers.overlay_mount([tmp_path / ("x" * 200)] * 30, tmp_path)


def test_unmount_of_something_not_mounted_is_a_no_op(tmp_path: Path) -> None:
    layers.unmount(tmp_path)
    st = os.stat(tmp_path)
    assert stat.S_ISDIR(st.st_mode)
