"""Containers that are not host root: each runs in a user namespace whose
ids 0..N-1 are the host's unprivileged ids ``base``..``base+N-1``.

- The range: ``THAW_CONTAINER_ID_RANGE`` (``BASE:COUNT``, default
  ``100000:65536``, reserved for root in ``/etc/subuid`` and ``/etc/subgid``
  by ``deploy/setup-host.sh`` so that no login user is handed it). One range
  per node, the same on every node by default: a memory snapshot's files (its
  upper layer) and its CRIU images hold host ids, so a snapshot restores on
  another node only when that node maps the same range.
- The root file system: its lower dirs (the base rootfs, an image's layers)
  belong to host root and are shared by every container; rather than a
  shifted copy per range, each is bind-mounted *idmapped* (``mount_setattr``
  with ``MOUNT_ATTR_IDMAP``, kernel 5.12+; overlayfs accepts idmapped layers
  since 5.19) so the container's root sees them as its own. runc 1.1 does not
  make idmapped mounts itself, so the agent does, before ``runc run``. What the
  container writes lands in its upper dir with the shifted host ids.
- What the agent writes for the container (its socket dir, its volumes' files)
  belongs to ``host_user(user)``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from thaw_core.image_users import ImageUser

log = logging.getLogger("thaw.agent.userns")

RANGE_ENV = "THAW_CONTAINER_ID_RANGE"
DEFAULT_BASE = 100_000
DEFAULT_COUNT = 65_536

_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_IDMAP = 0x0010_0000
# x86_64 and aarch64 share these numbers (the new mount API came after the
# syscall tables were unified).
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class IdRange:
    """Container ids 0..count-1 are host ids base..base+count-1 (uids and gids)."""

    base: int
    count: int

    def host_user(self, user: ImageUser) -> ImageUser:
        """The host ids of the container's ``user``: what owns its files on the host."""
        return ImageUser(
            self.base + user.uid,
            self.base + user.gid,
            user.home,
            tuple(self.base + g for g in user.groups),
        )

    def host_uid(self, container_uid: int) -> int:
        return self.base + container_uid

    def oci_mappings(self) -> list[dict[str, int]]:
        return [{"containerID": 0, "hostID": self.base, "size": self.count}]

    def map_line(self) -> str:
        return f"0 {self.base} {self.count}\n"


@functools.cache
def id_range() -> IdRange:
    """This node's range, from ``THAW_CONTAINER_ID_RANGE``; ValueError when malformed."""
    text = os.environ.get(RANGE_ENV, "").strip()
    if not text:
        return IdRange(DEFAULT_BASE, DEFAULT_COUNT)
    base, sep, count = text.partition(":")
    if not sep or not base.isdigit() or not count.isdigit():
        raise ValueError(f"{RANGE_ENV}={text!r}: write BASE:COUNT, e.g. 100000:65536")
    r = IdRange(int(base), int(count))
    if r.base == 0 or r.count < 65_536:
        raise ValueError(
            f"{RANGE_ENV}={text!r}: the range must start above host root and hold at least"
            " 65536 ids (images use uids up to 65534)"
        )
    return r


@functools.cache
def _userns_fd(r: IdRange) -> int:
    """An fd of a user namespace mapping ``r`` (kept open: idmapped mounts take
    its mapping when made; the namespace itself holds no process)."""
    # A process that only waits, in a fresh user namespace; its maps are
    # written from here (host root may), then it goes and the fd stays.
    child = subprocess.Popen(
        ["unshare", "--user", "sh", "-c", "read _"],
        stdin=subprocess.PIPE,
    )
    try:
        own = os.readlink("/proc/self/ns/user")
        ns_path = f"/proc/{child.pid}/ns/user"
        for _ in range(10_000):
            if os.readlink(ns_path) != own:
                break
            os.sched_yield()
        else:
            raise OSError("the helper process never entered its user namespace")
        Path(f"/proc/{child.pid}/uid_map").write_text(r.map_line())
        Path(f"/proc/{child.pid}/gid_map").write_text(r.map_line())
        return os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def idmapped_bind(source: Path, target: Path, r: IdRange) -> None:
    """Bind ``source`` at ``target`` (an empty dir) with host ids shifted into ``r``:
    a file of host uid 0 shows as ``r.base``, so the container's root owns it."""
    fd = _check(
        _libc.syscall(
            _SYS_OPEN_TREE,
            _AT_FDCWD,
            os.fsencode(source),
            _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | _AT_RECURSIVE,
        ),
        f"open_tree {source}",
    )
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, _userns_fd(r))
        _check(
            _libc.syscall(
                _SYS_MOUNT_SETATTR,
                fd,
                b"",
                _AT_EMPTY_PATH | _AT_RECURSIVE,
                ctypes.byref(attr),
                ctypes.sizeof(attr),
            ),
            f"idmap {source} (the kernel or its file system may not support idmapped mounts)",
        )
        _check(
            _libc.syscall(
                _SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH
            ),
            f"mount {source} at {target}",
        )
    finally:
        os.close(fd)


def make_traversable(directory: Path, ids: IdRange) -> None:
    """Let the containers' root, an unprivileged host uid, reach what is under
    ``directory``: runc mounts the rootfs and the binds, and CRIU reopens them
    at a restore, from inside the user namespace, so every directory on the
    way needs search permission for that uid. It is granted to that uid alone
    (a POSIX ACL entry ``u:<base>:x``, through setfacl), not to others: the
    state dir stays closed to every other local user."""
    uid = ids.base
    for d in (directory, *directory.parents):
        if d.stat().st_mode & stat.S_IXOTH:
            continue  # anyone may pass already (/, /var, ...)
        try:
            subprocess.run(
                ["setfacl", "-m", f"u:{uid}:x", str(d)], check=True, capture_output=True, text=True
            )
        except FileNotFoundError:
            raise RuntimeError(
                "setfacl is missing (Debian package acl; `make setup` installs it): containers"
                f" run as host uid {uid} and need search permission on {d}"
            ) from None
        except subprocess.CalledProcessError as e:
            raise RuntimeError(
                f"cannot let containers (host uid {uid}) search {d}: {e.stderr.strip()}"
            ) from None
