"""Image layers: ids, OCI-style layer tars, a local cache of unpacked layers,
and the overlay mount that stacks them into a container's root.

An image is a chain of build steps. Each step has a **layer id**::

    layer_id(parent, step) = sha256(parent + "\\n" + canonical JSON of the step)

where the step's JSON carries the content sha256 of any local files it adds,
so changing one step (or one file it adds) changes its id and every later
one, never an earlier one. The first step is the **base**: the node's default
rootfs (deploy/make-rootfs.sh), ``base_layer_id(rootfs)``. The image id is
the id of its last step.

A step that changes files is stored as a **layer tar**: the overlay upper
dir it produced, packed as a tar with OCI whiteouts (an overlay whiteout, a
0/0 character device, becomes an empty ``.wh.<name>``; an opaque directory
gets a ``.wh..wh..opq`` entry), zstd-compressed, in the blob store under
``layers/<digest>`` (digest: sha256 of the compressed bytes). Steps that only
set metadata (env, workdir) have an id but no tar. The base is stored the
same way, so that a node whose rootfs differs can still pull it; a node whose
own rootfs *is* the base (same id) uses it in place (``local_base``).

Unpacking turns the OCI whiteouts back into overlay whiteouts, so that the
unpacked layers of an image stack directly as overlay lowerdirs (as Docker's
overlay2 driver does): ``overlay_mount(lowerdirs, target, upper, work)``.
``LayerCache`` keeps unpacked layers on a node, keyed by digest: pulls are
digest-verified, atomic (unpacked aside, then renamed) and shared between
processes (one file lock per digest), and ``evict`` trims it to a size,
least recently used first, never removing a layer that a mounted overlay uses.

Everything here that touches the file system runs blocking; async callers
use ``asyncio.to_thread`` (``LayerCache.pull`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import io
import os
import posixpath
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import zstandard

from thaw_core import hosttools
from thaw_core.blob import BlobStore
from thaw_core.schema import ImageManifest, LayerRef

__all__ = [
    "BASE_DEBIAN_SLIM",
    "EMPTY_DIGEST",
    "ImageManifest",
    "LayerCache",
    "LayerError",
    "LayerRef",
    "PackedLayer",
    "base_layer_id",
    "blob_key",
    "canonical_json",
    "layer_id",
    "local_base",
    "lowerdirs",
    "mounts_under",
    "overlay_mount",
    "pack_layer",
    "rootfs_python_version",
    "unmount",
    "unpack_layer",
]

BASE_DEBIAN_SLIM = "debian_slim"
# The digest of a step that changed no file: nothing to store or mount.
EMPTY_DIGEST = ""

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
# xattrs that belong to overlayfs's bookkeeping (or to the host's security
# labelling), not to the files: never packed.
_SKIPPED_XATTRS = ("trusted.overlay.", "user.overlay.", "security.selinux")
_PAX_XATTR = "SCHILY.xattr."
_COPY_BUFSIZE = 1 << 20


class LayerError(Exception):
    """A layer that cannot be packed, unpacked or mounted, with the reason."""


# ---------------------------------------------------------------- ids


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace: equal values give equal bytes, whether they
    are dicts or msgspec Structs (omitted defaults stay omitted)."""
    return msgspec.json.encode(value, order="sorted")


def layer_id(parent: str, step: Any) -> str:
    """The id of ``step`` on top of the layer ``parent``. ``step`` must carry
    the content sha256 of every local file it adds (and no machine-specific
    path), so that the id says exactly what the layer contains."""
    h = hashlib.sha256()
    h.update(parent.encode())
    h.update(b"\n")
    h.update(canonical_json(step))
    return h.hexdigest()


def rootfs_python_version(rootfs: Path | None = None) -> str:
    """``major.minor`` of the rootfs's python3, from the marker make-rootfs.sh writes."""
    for line in _marker(rootfs).decode(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "python" and value.strip():
            return ".".join(value.strip().split(".")[:2])
    raise LayerError(f"the rootfs marker of {rootfs or hosttools.default_rootfs()} names no python")


def base_layer_id(rootfs: Path | None = None, python_version: str | None = None) -> str:
    """The id of the ``debian_slim`` base: sha256 of the op, the Python version
    and the rootfs's marker file (which records how and when it was built, so
    two independently built rootfs never share an id)."""
    version = python_version or rootfs_python_version(rootfs)
    return hashlib.sha256(
        BASE_DEBIAN_SLIM.encode() + version.encode() + _marker(rootfs)
    ).hexdigest()


def _marker(rootfs: Path | None) -> bytes:
    root = rootfs or hosttools.default_rootfs()
    try:
        return (root / hosttools.ROOTFS_MARKER).read_bytes()
    except FileNotFoundError:
        raise LayerError(f"no finished rootfs at {root}: run `make setup`") from None


def blob_key(digest: str) -> str:
    return f"layers/{digest}"


# ---------------------------------------------------------------- manifests


# LayerRef and ImageManifest are wire types (BuildResult carries them): they
# live in thaw_core.schema and are re-exported here.


# ---------------------------------------------------------------- packing


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


# ---------------------------------------------------------------- unpacking


def unpack_layer(src: Path, dest: Path) -> int:
    """Unpack the zstd layer tar ``src`` into the empty directory ``dest``,
    turning OCI whiteouts into overlay ones. Returns the bytes it occupies.

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
    except (tarfile.TarError, zstandard.ZstdError) as e:
        raise LayerError(f"{src}: not a valid layer tar: {e}") from e
    # Applied after extraction: chown (done by extractall) clears capabilities.
    for target, found in xattrs:
        for k, v in found.items():
            try:
                os.setxattr(target, k, v, follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EPERM):
                    raise
    return _disk_usage(dest)


def _extract(src: Path, root: str, xattrs: list[tuple[str, dict[str, bytes]]]) -> None:
    with (
        open(src, "rb") as f,
        zstandard.ZstdDecompressor().stream_reader(f) as zr,
        tarfile.open(fileobj=zr, mode="r|", copybufsize=_COPY_BUFSIZE) as tar,
    ):

        def members() -> Iterator[tarfile.TarInfo]:
            for m in tar:
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


def _disk_usage(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


# ---------------------------------------------------------------- mounting

_MNT_DETACH = 2
_MS_RDONLY = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
# The kernel copies at most one page of mount options.
_MAX_MOUNT_DATA = 4095


def overlay_mount(
    lowerdirs: Sequence[Path],
    target: Path,
    *,
    upper: Path | None = None,
    work: Path | None = None,
) -> None:
    """Mount an overlay of ``lowerdirs`` at ``target``.

    ``lowerdirs`` are in **image order: base first, top layer last** (the
    reverse of overlayfs's own ``lowerdir=`` string). With ``upper`` and
    ``work`` (same file system, ``work`` empty) the mount is writable and
    every change lands in ``upper``; without them it is read-only and needs
    at least two lowerdirs. redirect_dir and metacopy are off so that the
    upper dir is always a plain tree plus whiteouts, i.e. packable as a layer.
    """
    if not lowerdirs:
        raise LayerError("an overlay needs at least one lower dir")
    if (upper is None) != (work is None):
        raise LayerError("give both upper and work, or neither")
    if upper is None and len(lowerdirs) < 2:
        raise LayerError("a read-only overlay needs two lower dirs; bind-mount a single one")
    paths = [*lowerdirs, target, *((upper, work) if upper is not None else ())]
    for p in paths:
        if any(c in str(p) for c in ",:\\"):
            raise LayerError(f"overlay path may not contain ',', ':' or '\\': {p}")
    opts = "lowerdir=" + ":".join(str(p) for p in reversed(lowerdirs))
    if upper is not None:
        opts += f",upperdir={upper},workdir={work}"
    opts += ",redirect_dir=off,metacopy=off"
    if len(opts) > _MAX_MOUNT_DATA:
        raise LayerError(
            f"{len(lowerdirs)} layers make overlay options of {len(opts)} bytes, more than the "
            f"kernel's {_MAX_MOUNT_DATA}: use a cache dir with a shorter path or fewer steps"
        )
    flags = 0 if upper is not None else _MS_RDONLY
    if _libc.mount(b"overlay", os.fsencode(target), b"overlay", flags, opts.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount overlay at {target}: {os.strerror(err)}")


def unmount(target: Path) -> None:
    """Lazily unmount ``target``; nothing to do when it is not mounted."""
    if _libc.umount2(os.fsencode(target), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"unmount {target}: {os.strerror(err)}")


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory`` in this mount namespace, deepest
    first (the order to unmount them in)."""
    prefix = str(directory).rstrip("/") + "/"
    found: set[Path] = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            point = _unescape(line.split(" ", 5)[4])
            if point == prefix[:-1] or point.startswith(prefix):
                found.add(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _overlay_lowerdirs_in_use() -> set[str]:
    """Every lower dir of every overlay mounted in this mount namespace."""
    used: set[str] = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            _, _, post = line.partition(" - ")
            fields = post.split(" ", 2)
            if len(fields) < 3 or fields[0] != "overlay":
                continue
            for opt in fields[2].strip().split(","):
                if opt.startswith("lowerdir="):
                    used.update(_unescape(p) for p in opt[len("lowerdir=") :].split(":"))
    return used


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    return s.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


# ---------------------------------------------------------------- the cache


def local_base(ref: LayerRef, rootfs: Path | None = None) -> Path | None:
    """This node's default rootfs when it *is* the base layer ``ref``, else None."""
    root = rootfs or hosttools.default_rootfs()
    if ref.base != BASE_DEBIAN_SLIM or not hosttools.rootfs_ready(root):
        return None
    try:
        return root if base_layer_id(root) == ref.layer_id else None
    except LayerError:
        return None


class LayerCache:
    """Unpacked layers on this node, ``<root>/<digest>/``, shared by every
    process that points at the same ``root`` (builder, agent).

    ``<root>/<digest>.size`` holds the layer's disk usage; its mtime is the
    layer's last use (the LRU clock). Work in progress lives in ``<root>/.tmp``
    and file locks in ``<root>/.locks``; keep ``root`` on the file system
    where overlay upper dirs are made, so that ``adopt`` is a rename.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        self.locks = root / ".locks"
        for d in (self.root, self.tmp, self.locks):
            d.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        _check_digest(digest)
        return self.root / digest

    def has(self, digest: str) -> bool:
        return (self.root / f"{_check_digest(digest)}.size").exists()

    def touch(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.root / f"{digest}.size")

    def scratch(self, prefix: str = "") -> Path:
        """A fresh directory on the cache's file system (for ``adopt``)."""
        d = self.tmp / f"{prefix}{uuid.uuid4().hex}"
        d.mkdir()
        return d

    async def pull(self, blob: BlobStore, digest: str) -> Path:
        """The unpacked layer ``digest``, fetched from ``blob`` and verified
        against the digest when this node does not have it yet."""
        if self.has(digest):
            self.touch(digest)
            return self.path(digest)
        async with self._locked(digest):
            if self.has(digest):  # another process pulled it meanwhile
                self.touch(digest)
                return self.path(digest)
            work = self.scratch("pull-")
            try:
                tar = work / "layer.tar.zst"
                await blob.get_to_file(blob_key(digest), tar, sha256=digest)
                size = await asyncio.to_thread(unpack_layer, tar, work / "fs")
                tar.unlink()
                return self._commit(digest, work / "fs", size)
            finally:
                await asyncio.to_thread(shutil.rmtree, work, True)

    async def adopt(self, digest: str, tree: Path) -> Path:
        """Move ``tree`` (an unpacked layer this process made, on the cache's
        file system) into the cache as ``digest``; drops it if already there."""
        async with self._locked(digest):
            if self.has(digest):
                await asyncio.to_thread(shutil.rmtree, tree, True)
                self.touch(digest)
                return self.path(digest)
            size = await asyncio.to_thread(_disk_usage, tree)
            return self._commit(digest, tree, size)

    def _commit(self, digest: str, tree: Path, size: int) -> Path:
        final = self.path(digest)
        if final.exists():  # a leftover of a crash between rename and .size
            shutil.rmtree(final)
        os.rename(tree, final)
        stamp = self.root / f"{digest}.size"
        tmp_stamp = self.tmp / f"{digest}.size.{uuid.uuid4().hex}"
        tmp_stamp.write_text(str(size))
        os.rename(tmp_stamp, stamp)  # the .size file's presence means "complete"
        return final

    def usage(self) -> dict[str, tuple[int, float]]:
        """digest -> (bytes on disk, last use) of every complete layer."""
        out: dict[str, tuple[int, float]] = {}
        for stamp in self.root.glob("*.size"):
            with contextlib.suppress(OSError, ValueError):
                out[stamp.name[: -len(".size")]] = (
                    int(stamp.read_text() or 0),
                    stamp.stat().st_mtime,
                )
        return out

    async def evict(self, max_bytes: int) -> list[str]:
        """Remove least recently used layers until the cache holds at most
        ``max_bytes``; layers that a mounted overlay uses are kept. Returns
        the digests removed."""
        usage = self.usage()
        total = sum(size for size, _ in usage.values())
        if total <= max_bytes:
            return []
        in_use = await asyncio.to_thread(_overlay_lowerdirs_in_use)
        removed: list[str] = []
        for digest, (size, _) in sorted(usage.items(), key=lambda kv: kv[1][1]):
            if total <= max_bytes:
                break
            if str(self.path(digest)) in in_use:
                continue
            async with self._locked(digest):
                stamp = self.root / f"{digest}.size"
                if not stamp.exists():
                    continue
                stamp.unlink()  # no longer "complete": nobody picks it up now
                trash = self.tmp / f"evict-{digest}-{uuid.uuid4().hex[:6]}"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.path(digest), trash)
            await asyncio.to_thread(shutil.rmtree, trash, True)
            total -= size
            removed.append(digest)
        return removed

    def sweep(self) -> None:
        """Remove what crashed pulls and builds left in ``.tmp`` (call at start-up,
        when no other process of this cache is working)."""
        for entry in self.tmp.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def _locked(self, digest: str) -> Any:
        """An exclusive flock on ``.locks/<digest>``, polled so that waiting
        never blocks the event loop and can be cancelled."""
        fd = os.open(self.locks / digest, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            delay = 0.01
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.2)
            yield
        finally:
            os.close(fd)  # releases the lock


async def lowerdirs(
    refs: Sequence[LayerRef], cache: LayerCache, blob: BlobStore, *, rootfs: Path | None = None
) -> list[Path]:
    """The unpacked layers ``refs`` (an ``ImageManifest.layers``), base first
    (``overlay_mount``'s order): the local rootfs for a matching base, the
    cache for the rest, pulling what is missing."""
    dirs: list[Path] = []
    for ref in refs:
        if ref.digest == EMPTY_DIGEST:
            continue
        here = local_base(ref, rootfs)
        dirs.append(here if here is not None else await cache.pull(blob, ref.digest))
    return dirs


def _check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise LayerError(f"not a sha256 digest: {digest!r}")
    return digest
