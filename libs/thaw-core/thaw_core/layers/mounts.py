"""Host mounts: overlays (a container's or a build step's root), unmounting,
and what is mounted where.

Direct syscalls (ctypes) rather than mount(8): no fork per container start,
and errno instead of parsing a message. runc cannot mount an overlay as the
root file system from config.json, so the agent mounts it before ``runc run``
and unmounts it after ``runc delete``; the builder mounts each step's root.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from thaw_core.layers.ids import LayerError

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
    redirect_dir: bool = False,
) -> None:
    """Mount an overlay of ``lowerdirs`` at ``target``.

    ``lowerdirs`` are in **image order: base first, top layer last** (the
    reverse of overlayfs's own ``lowerdir=`` string). With ``upper`` and
    ``work`` (same file system, ``work`` empty) the mount is writable and
    every change lands in ``upper``; without them it is read-only and needs
    at least two lowerdirs. redirect_dir and metacopy are off so that the
    upper dir is always a plain tree plus whiteouts, i.e. packable as a layer;
    ``redirect_dir`` turns it on, for an overlay whose upper dir is never
    packed (a volume's mount), so that renaming a lower directory works.
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
    opts += f",redirect_dir={'on' if redirect_dir else 'off'},metacopy=off"
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


def overlay_lowerdirs_in_use() -> set[str]:
    """Every lower dir of every overlay mounted in this mount namespace. A
    lower dir that is itself a bind mount (the agent's idmapped binds of its
    layers) counts as the directory it binds, too."""
    used: set[str] = set()
    mounts = _mountinfo()
    for m in mounts:
        if m.fstype != "overlay":
            continue
        for opt in m.options.split(","):
            if opt.startswith("lowerdir="):
                for p in opt[len("lowerdir=") :].split(":"):
                    lower = _unescape(p)
                    used.add(lower)
                    source = _bind_source(lower, mounts)
                    if source is not None:
                        used.add(source)
    return used


@dataclass(frozen=True)
class _Mount:
    device: str  # major:minor
    root: str  # the mounted directory, within its file system
    point: str
    fstype: str
    options: str  # the file system's own (super) options


def _mountinfo() -> list[_Mount]:
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields = pre.split(" ")
            rest = post.split(" ", 2)
            if len(fields) < 5 or len(rest) < 3:
                continue
            found.append(
                _Mount(
                    fields[2], _unescape(fields[3]), _unescape(fields[4]), rest[0], rest[2].strip()
                )
            )
    return found


def _bind_source(point: str, mounts: Sequence[_Mount]) -> str | None:
    """The host path a bind mount at ``point`` shows, from a mount of the whole
    (or most) of the same file system; None when ``point`` binds nothing."""
    bind = next((m for m in reversed(mounts) if m.point == point), None)
    if bind is None or bind.root == "/":
        return None
    # The mount showing the most of that file system (the shortest root that
    # holds the bind's root), not another bind of the same directory.
    holders = [
        m
        for m in mounts
        if m.device == bind.device
        and m is not bind
        and (bind.root == m.root or bind.root.startswith(m.root.rstrip("/") + "/"))
    ]
    if not holders:
        return None
    whole = min(holders, key=lambda m: len(m.root))
    tail = bind.root[len(whole.root.rstrip("/")) :]
    return whole.point.rstrip("/") + tail if whole.point != "/" else tail


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    return s.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")


def remove_tree(directory: Path) -> None:
    """Unmount whatever is mounted at or below ``directory``, then remove it."""
    for point in mounts_under(directory):
        unmount(point)
    shutil.rmtree(directory, ignore_errors=True)
