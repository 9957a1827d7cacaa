"""A volume version mounted as an overlay, in time O(files) not O(bytes).

Beside the mount's directory ``<root>``, ``<root>.layers/`` holds:

- ``lower/``: the version as a tree of hard links to the node's whole-file
  cache (``volume_files``) and directories of the mount's own;
- ``upper/`` and ``work/``: what the container writes.

Overlayfs never writes to a lower layer: a container writing (or chmodding,
or renaming) a file copies it up first, so the cache, and every other mount
linking the same files, stay as they were. Copy-up keeps size and mtime, so
``MountedVolume.changes`` finds only what the container wrote, walking
``upper/`` alone (``volume_changes``); a reload writes by rename into the
merged view, which lands in ``upper/``.

The overlay's root directory takes its owner from ``upper/``, the files
from their cached inodes: both are the container's user's (as the host
numbers it), who may then write everything in the mount. The overlay is
unmounted with the directory holding it (``thaw_core.layers.remove_tree``,
as a container's end and an agent's next start remove theirs, and
``MountedVolume.remove``); removing ``lower/`` only unlinks names, never the cache's
files. Where no overlay can be mounted (the agent not root, a kernel or file
system refusing) the caller copies the files in instead (``refusal``).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from thaw_core.image_users import ROOT, ImageUser
from thaw_core.layers import LayerError, mounts_under, overlay_mount
from thaw_core.schema import VolumeEntry

from thaw_agent.volume_files import FileCache

log = logging.getLogger("thaw.agent.volumes")

_said: set[str] = set()


def layers_dir(root: Path) -> Path:
    return root.with_name(root.name + ".layers")


def refusal() -> str | None:
    """Why no overlay can be mounted here at all; None when one may be."""
    if os.geteuid() != 0:
        return "the agent is not root"
    return None


def say_once(why: str) -> None:
    """Log, once per reason, that mounts are copied in rather than overlaid."""
    if why not in _said:
        _said.add(why)
        log.warning(
            "volumes are copied into their mounts, not overlaid on the node's file cache"
            " (each mount copies every byte)",
            extra={"why": why},
        )


def build_lower(
    lower: Path, entries: Iterable[VolumeEntry], files: FileCache, owner: ImageUser
) -> None:
    """``lower`` as the version of ``entries``: directories made, files
    linked from the file cache (blocking; their chunks must be cached)."""
    lower.mkdir(parents=True)
    _own(lower, owner)
    for e in entries:
        if e.deleted:
            continue
        target = lower / e.path
        if e.kind == "dir":
            _make_dirs(lower, target, owner)
            continue
        _make_dirs(lower, target.parent, owner)
        cached = files.get(e, owner)
        try:
            os.link(cached, target)
        except OSError as err:
            # Another file system than the cache's, or an inode at its link
            # limit: a copy of its own. Never over a name that exists: it may
            # be a link to the cache, and copying onto it would write there.
            if err.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM):
                raise
            shutil.copy2(cached, target)
            _own(target, owner)


def mount(root: Path, owner: ImageUser) -> None:
    """Mount the overlay of ``layers_dir(root)`` at ``root`` (made with
    ``build_lower``; ``upper/`` and ``work/`` made here when missing, as on a
    first mount, kept when the overlay is mounted again after a reboot)."""
    layers = layers_dir(root)
    upper, work = layers / "upper", layers / "work"
    for d in (upper, work):
        d.mkdir(exist_ok=True)
    _own(upper, owner)  # the merged root's owner (ROOT: left as it is)
    # redirect_dir: a container renaming a directory of the volume gets a
    # rename, not EXDEV (this upper dir is never packed as an image layer).
    overlay_mount([layers / "lower"], root, upper=upper, work=work, redirect_dir=True)


def is_mounted(root: Path) -> bool:
    real = Path(os.path.realpath(root))  # as /proc/self/mountinfo names it
    return real in mounts_under(real)


MountError = (OSError, LayerError)


def _make_dirs(lower: Path, d: Path, owner: ImageUser) -> None:
    """``d`` and the directories above it inside ``lower``, the owner's."""
    made = []
    while d != lower and not d.is_dir():
        made.append(d)
        d = d.parent
    for m in reversed(made):
        m.mkdir()
        _own(m, owner)


def _own(path: Path, owner: ImageUser) -> None:
    if owner != ROOT:
        os.lchown(path, owner.uid, owner.gid)
