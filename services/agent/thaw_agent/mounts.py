"""Host mounts the agent makes itself: each container's overlay root.

runc cannot mount an overlay as the root file system from config.json, so the
agent mounts it at ``root.path`` before ``runc run`` and unmounts it after
``runc delete``. Direct syscalls (ctypes) rather than mount(8): no fork per
container start, and errno instead of parsing a message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

_MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """Mount ``lower`` (read-only) + ``upper``/``work`` (this container's) at ``target``."""
    for p in (lower, upper, work, target):
        if "," in str(p) or ":" in str(p):
            # They would be read as separators in the option string.
            raise ValueError(f"overlay path may not contain ',' or ':': {p}")
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    _check(
        _libc.mount(b"overlay", os.fsencode(target), b"overlay", 0, opts.encode()),
        f"mount overlay at {target}",
    )


def unmount(target: Path) -> None:
    """Lazily unmount ``target``; nothing to do when it is not mounted."""
    ret = _libc.umount2(os.fsencode(target), _MNT_DETACH)
    if ret != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(ret, f"unmount {target}")


def mounts_under(directory: Path) -> list[Path]:
    """Mount points at or below ``directory``, deepest first (the order to unmount)."""
    prefix = str(directory).rstrip("/") + "/"
    found: list[Path] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            # Field 5 is the mount point, with spaces etc. escaped as octal.
            point = _unescape(line.split(" ", 5)[4])
            if point == prefix[:-1] or point.startswith(prefix):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _unescape(s: str) -> str:
    if "\\" not in s:
        return s
    return s.encode().decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")
