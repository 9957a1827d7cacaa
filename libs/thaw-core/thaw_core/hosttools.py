"""Where the host tools that `make setup` installs live, and how to call them.

`deploy/setup-host.sh` installs runc (Debian bookworm's), CRIU 4.x from Debian
trixie into a private prefix behind a wrapper script (bookworm's criu 3.17
fails on recent kernels, and trixie's package would upgrade libc), and the
default container rootfs. Services find them here rather than on ``PATH``, and
``versions()`` feeds the node fingerprint: a snapshot is only restored where
the CRIU and kernel versions match.

| variable          | default                                                        |
|-------------------|----------------------------------------------------------------|
| THAW_CRIU         | $THAW_CRIU_PREFIX/bin/criu                                     |
| THAW_CRIU_PREFIX  | /opt/thaw/criu as root, ~/.local/share/thaw/criu otherwise     |
| THAW_RUNC         | `runc` on PATH, else /usr/sbin/runc                            |
| THAW_ROOTFS       | /var/lib/thaw/rootfs/bookworm-python as root,                  |
|                   | ~/.local/share/thaw/rootfs/bookworm-python otherwise           |
| THAW_RUNTIME_DIR  | /var/lib/thaw/runtime as root, ~/.local/share/thaw/runtime     |
|                   | otherwise (``thaw_agent.runtime_dir``, laid out by the agent)  |

What works with runc 1.1.5 + CRIU 4.1.1 on kernel 6.18 (cgroup v1 hybrid),
measured by tests/integration/test_host_tools.py:

- ``runc --criu WRAPPER checkpoint --image-path IMG --work-path WORK ID``:
  ``--criu`` is a *global* flag (before the subcommand); without it runc runs
  ``criu`` from PATH (bookworm's broken 3.17, or nothing). Keep ``--work-path``
  apart from the image dir: CRIU writes dump.log/restore.log there (read them
  on failure) and the image dir then holds only what a snapshot must pack.
  The container is gone afterwards unless ``--leave-running``. ~0.17 s and a
  4.6 MB image for an idle Python process.
- ``runc --criu WRAPPER restore --detach --image-path IMG --work-path WORK
  --bundle BUNDLE NEW_ID``: ~0.2 s. One image restores several times side by
  side under different ids (each gets its own ``/<id>`` cgroup).
- stdio must be pipes (or /dev/null for stdin), never regular files: CRIU
  cannot dump a regular-file stdout. runc records the pipes in the image's
  descriptors.json and, on restore, rewires them to *restore's own* fds 0/1/2,
  so give ``runc restore`` fresh pipes and read the restored process there.
  The container keeps those pipes open: never read runc's stderr to EOF after
  a successful ``run --detach``/``restore --detach`` (it would block forever).
- The process is pid 1 and its own session leader (runc does the setsid), so
  an image restores any number of times.
- A ``network`` namespace without a path is passed to CRIU as an *empty* ns:
  nothing of it is dumped, the restored container gets a fresh one with only
  ``lo``, and CRIU's iptables network lock is not needed. (A container that
  joins an existing netns, or keeps TCP connections, needs iptables.)
- Rootfs: the shared rootfs read-only + tmpfs mounts works; so does an
  overlay (lower = the shared rootfs, upper per container) that the caller
  mounts at ``root.path`` (read-write): restore into another bundle whose
  overlay upper is a copy of the checkpointed one, even with files in the
  upper held open. Bind mounts in config.json (a host dir at /io) are treated
  as external mounts by runc; their source must exist at restore.
- CRIU logs "Error ... rlimit: Can't setup RLIMIT_NOFILE for self" on every
  run; it is harmless.
- CRIU plugins (cuda_plugin.so for GPU snapshots) are not in trixie's package;
  CRIU looks for them in /usr/lib/criu unless given ``--libdir``.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "criu_path",
    "criu_prefix",
    "default_rootfs",
    "rootfs_ready",
    "runc_checkpoint_cmd",
    "runc_path",
    "runc_restore_cmd",
    "versions",
]

ROOTFS_MARKER = "etc/thaw-rootfs"
"""Written last by deploy/make-rootfs.sh: its presence means the build finished."""


def _is_root() -> bool:
    return os.geteuid() == 0


def _machine_path(env: str, as_root: str, in_home: str) -> Path:
    """``$env`` when set; else the machine-wide path for root, or one under
    the user's home."""
    given = os.environ.get(env)
    if given:
        return Path(given).expanduser()
    return Path(as_root) if _is_root() else Path.home() / in_home


def criu_prefix() -> Path:
    """The private prefix holding trixie's criu and its own libc (see install-criu.sh)."""
    return _machine_path("THAW_CRIU_PREFIX", "/opt/thaw/criu", ".local/share/thaw/criu")


def criu_path() -> Path:
    """The criu to hand to ``runc --criu``: the wrapper, never a system criu.

    The wrapper execs criu through the prefix's own ld.so; bookworm's own
    /usr/sbin/criu (3.17) fails on this kernel, so it is not a fallback. The
    path may not exist yet (before `make setup`): callers check.
    """
    env = os.environ.get("THAW_CRIU")
    if env:
        return Path(env).expanduser()
    return criu_prefix() / "bin" / "criu"


def runc_path() -> Path:
    """runc from the Debian package; /usr/sbin is often not on a user's PATH."""
    env = os.environ.get("THAW_RUNC")
    if env:
        return Path(env).expanduser()
    found = shutil.which("runc")
    return Path(found) if found else Path("/usr/sbin/runc")


def default_rootfs() -> Path:
    """The container rootfs that deploy/make-rootfs.sh builds (Debian bookworm + python3)."""
    return _machine_path(
        "THAW_ROOTFS", "/var/lib/thaw/rootfs/bookworm-python", ".local/share/thaw/rootfs/bookworm-python"
    )


def runtime_dir_root() -> Path:
    """Where agents lay out the runtime's packages for their own Python, shared
    by every agent of the machine (one directory per Python and versions)."""
    return _machine_path("THAW_RUNTIME_DIR", "/var/lib/thaw/runtime", ".local/share/thaw/runtime")


def rootfs_ready(rootfs: Path | None = None) -> bool:
    """True when the rootfs build finished (its marker file exists)."""
    return ((rootfs or default_rootfs()) / ROOTFS_MARKER).is_file()


def _tool_version(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    m = re.search(pattern, out, re.MULTILINE)
    return m.group(1) if m else ""


@functools.cache
def versions() -> dict[str, str]:
    """Versions that decide whether a snapshot restores on this node.

    Keys ``criu``, ``runc``, ``kernel``; a missing tool gives "". Cached for
    the process's life (call ``versions.cache_clear()`` after installing).
    """
    return {
        "criu": _tool_version([str(criu_path()), "--version"], r"^Version:\s*(\S+)"),
        "runc": _tool_version([str(runc_path()), "--version"], r"^runc version\s+(\S+)"),
        "kernel": platform.release(),
    }


def _global_flags(state_root: Path | None) -> list[str]:
    # --root: a private runc state dir keeps thaw's containers apart from any
    # other runc user's (and from `runc list` in /run/runc).
    flags = [str(runc_path())]
    if state_root is not None:
        flags += ["--root", str(state_root)]
    return flags + ["--criu", str(criu_path())]


def runc_checkpoint_cmd(
    container_id: str,
    image_path: Path,
    work_path: Path,
    *,
    state_root: Path | None = None,
    leave_running: bool = False,
) -> list[str]:
    """argv for ``runc checkpoint`` with the flags known to work here (see module doc)."""
    argv = _global_flags(state_root) + [
        "checkpoint",
        "--image-path",
        str(image_path),
        "--work-path",
        str(work_path),
    ]
    if leave_running:
        argv.append("--leave-running")
    return argv + [container_id]


def runc_restore_cmd(
    container_id: str,
    bundle: Path,
    image_path: Path,
    work_path: Path,
    *,
    state_root: Path | None = None,
) -> list[str]:
    """argv for a detached ``runc restore``; run it with pipes as stdin/stdout/stderr."""
    return _global_flags(state_root) + [
        "restore",
        "--detach",
        "--image-path",
        str(image_path),
        "--work-path",
        str(work_path),
        "--bundle",
        str(bundle),
        container_id,
    ]
