"""Layer tars: an overlay upper dir packed as a zstd OCI layer, and back.

Packing turns overlay whiteouts (0/0 character devices) into OCI ones (an
empty ``.wh.<name>``) and an opaque directory's xattr into a ``.wh..wh..opq``
entry; unpacking turns them back, so that unpacked layers stack directly as
overlay lower dirs. xattrs travel as PAX headers; overlayfs's own bookkeeping
and the host's security labels are never packed.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from thaw_core.layers.ids import EMPTY_DIGEST, LayerError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# xattrs that belong to overlayfs's bookkeeping (or to the host's security
# labelling), not to the files: never packed.
_SKIPPED_XATTRS = ("trusted.overlay.", "user.overlay.", "security.selinux")
_PAX_XATTR = "SCHILY.xattr."
_COPY_BUFSIZE = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class PackedLayer:
    digest: str  # EMPTY_DIGEST when the directory held nothing
    size: int  # compressed bytes
    path: Path | None  # the .tar.zst; None when empty


class _HashingWriter(io.RawIOBase):
    """Writes through to ``out`` while hashing and counting what passes."""

    def __init__(self, out: io.BufferedWriter) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self.out.write(b)


def pack_layer(src: Path, out: Path, *, level: int = 3) -> PackedLayer:
    """Pack the directory ``src`` (an overlay upper dir, or a plain tree) as a
    zstd-compressed OCI layer tar at ``out``. Returns its digest; an empty
    ``src`` gives ``EMPTY_DIGEST`` and writes nothing."""
    with os.scandir(src) as it:
        if next(it, None) is None:
            return PackedLayer(EMPTY_DIGEST, 0, None)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as raw:
        hashing = _HashingWriter(raw)
        compressor = zstandard.ZstdCompressor(level=level, threads=-1)
        with (
            compressor.stream_writer(hashing, closefd=False, write_size=_COPY_BUFSIZE) as zw,
            tarfile.open(
                fileobj=zw, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_COPY_BUFSIZE
            ) as tar,
        ):
            for path, rel in _walk(src):
                _add_entry(tar, path, rel)
    return PackedLayer(hashing.sha.hexdigest(), hashing.size, out)


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Every entry below ``root`` (not root itself), parents before children,
    in a stable order so that equal trees pack alike."""
    stack = [(root, "")]
    while stack:
        directory, rel_dir = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs = []
        for e in entries:
            rel = f"{rel_dir}{e.name}"
            yield Path(e.path), rel
            if e.is_dir(follow_symlinks=False):
                subdirs.append((Path(e.path), f"{rel}/"))
        stack.extend(reversed(subdirs))


def _add_entry(tar: tarfile.TarFile, path: Path, rel: str) -> None:
    st = os.lstat(path)
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        # An overlay whiteout: the file was deleted.
        parent, name = posixpath.split(rel)
        tar.addfile(_empty_entry(posixpath.join(parent, WHITEOUT_PREFIX + name), st))
        return
    if stat.S_ISSOCK(st.st_mode):
        return  # a socket left by a build process is not file content
    info = tar.gettarinfo(str(path), arcname=rel)
    xattrs = _read_xattrs(path)
    opaque = xattrs.pop(OPAQUE_XATTR, None) == b"y"
    if xattrs:
        info.pax_headers = {
            _PAX_XATTR + k: v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()
        }
    if info.isreg():
        with open(path, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)
    if opaque and info.isdir():
        tar.addfile(_empty_entry(posixpath.join(rel, OPAQUE_MARKER), st))


def _empty_entry(name: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = int(st.st_mtime)
    info.mode = 0o644
    return info


def _read_xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for name in names:
        if name.startswith(_SKIPPED_XATTRS) and name != OPAQUE_XATTR:
            continue
        with contextlib.suppress(OSError):
            out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


def unpack_layer(src: Path, dest: Path) -> int:
    """Unpack the layer tar ``src`` (zstd, as thaw packs it; or gzip or plain,
    as registries hold them) into the empty directory ``dest``, turning OCI
    whiteouts into overlay ones. Returns the bytes it occupies.

    Refuses (``LayerError``) members that would land outside ``dest``: absolute
    or ``..`` paths, paths through a symlink, hard links to anything but a
    regular file of the layer. Owners are kept numerically, modes (setuid
    included) and xattrs as packed: a layer is a root file system.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    xattrs: list[tuple[str, dict[str, bytes]]] = []
    try:
        _extract(src, root, xattrs)
    except (tarfile.TarError, zstandard.ZstdError, gzip.BadGzipFile, EOFError) as e:
        raise LayerError(f"{src}: not a valid layer tar: {e}") from e
    # Applied after extraction: chown (done by extractall) clears capabilities.
    for target, found in xattrs:
        for k, v in found.items():
            try:
                os.setxattr(target, k, v, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
    return disk_usage(dest)


def _extract(src: Path, root: str, xattrs: list[tuple[str, dict[str, bytes]]]) -> None:
    with (
        open(src, "rb") as f,
        _decompressed(f) as zr,
        tarfile.open(fileobj=zr, mode="r|", copybufsize=_COPY_BUFSIZE) as tar,
    ):

        def members() -> Iterator[tarfile.TarInfo]:
            for m in tar:
                if posixpath.normpath(m.name) == "." and m.isdir():
                    continue  # the layer's root ("./" in tars made with `tar -C dir .`)
                name = _clean_name(m.name)
                parent, base = posixpath.split(name)
                if base == OPAQUE_MARKER:
                    d = _inside(root, parent) if parent else root
                    os.makedirs(d, exist_ok=True)
                    os.setxattr(d, OPAQUE_XATTR, b"y", follow_symlinks=False)
                    continue
                if base.startswith(WHITEOUT_PREFIX):
                    target = _inside(root, posixpath.join(parent, base[len(WHITEOUT_PREFIX) :]))
                    _remove(target)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                    continue
                target = _inside(root, name)
                if m.islnk():
                    link = _inside(root, _clean_name(m.linkname))
                    if not stat.S_ISREG(os.lstat(link).st_mode):
                        raise LayerError(f"{m.name}: hard link to a non-regular file {m.linkname}")
                    m.linkname = posixpath.relpath(link, root)
                # A later entry replaces an earlier one; unlinking first also
                # keeps a file write from following a symlink the layer made.
                if not (m.isdir() and os.path.isdir(target)):
                    _remove(target)
                m.name = name
                found = {
                    k[len(_PAX_XATTR) :]: v.encode("utf-8", "surrogateescape")
                    for k, v in m.pax_headers.items()
                    if k.startswith(_PAX_XATTR)
                }
                if found:
                    xattrs.append((target, found))
                yield m

        tar.extractall(root, members=members(), numeric_owner=True, filter="fully_trusted")


def _decompressed(f: BinaryIO) -> contextlib.AbstractContextManager[Any]:
    """A reader of ``f``'s tar, whichever of zstd, gzip or none it is packed with."""
    magic = f.read(4)
    f.seek(0)
    if magic == _ZSTD_MAGIC:
        return zstandard.ZstdDecompressor().stream_reader(f)
    if magic[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb")
    return contextlib.nullcontext(f)


def _clean_name(name: str) -> str:
    clean = posixpath.normpath(name)
    if name.startswith("/") or clean == ".." or clean.startswith("../") or clean == ".":
        raise LayerError(f"layer member {name!r} is not a relative path inside the layer")
    return clean


def _inside(root: str, rel: str) -> str:
    """``root/rel``, refusing a ``rel`` whose parent resolves outside ``root``
    (through a symlink unpacked earlier)."""
    parent, base = os.path.split(os.path.join(root, rel))
    real_parent = os.path.realpath(parent)
    if real_parent != root and not real_parent.startswith(root + os.sep):
        raise LayerError(f"layer member {rel!r} would be written outside the layer")
    return os.path.join(real_parent, base)


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def disk_usage(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total
