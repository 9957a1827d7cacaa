"""What changed in a mounted volume since it was loaded or last committed.

A copied-in mount (no overlay) has nothing to go by but the tree itself:
every file is walked and compared, by size and mtime, with what it held
(``walk_tree``). An overlay mount (``volume_overlay``) keeps everything the
container wrote in its ``upper/`` dir: copied-up and new files, whiteouts
for what it deleted, opaque and redirected directories. ``walk_overlay``
walks only that, so a commit costs O(what changed), not O(volume), and the
bytes are read from the real files in ``upper/``, not through the overlay.

How the merged view follows from ``upper/`` (the kernel's
Documentation/filesystems/overlayfs.rst), and what each means here:

- a regular file: written, or copied up (by a chown, an open for writing):
  compared with what was known by size and mtime, as a full walk would, so
  a copy-up that changed nothing is no change;
- a whiteout (a character device 0/0; or a zero-size file with
  ``trusted.overlay.whiteout`` in a directory marked ``opaque=x``): nothing
  at that path, nor under it;
- a directory with ``trusted.overlay.opaque=y``: nothing of the lower below
  it shows; only what ``upper/`` holds there;
- a directory with ``trusted.overlay.redirect`` (renamed with
  ``redirect_dir=on``): its content comes from elsewhere in the lower, so it
  is walked whole through the merged view (the rename's source is a
  whiteout, which covers its deletions);
- any other name (a directory over a file, a symlink, a fifo): no file
  there, nor under it (non-directories are opaque).

Only ``trusted.`` xattrs count: the agent mounts as root without
``userxattr``, and a container may set ``user.`` xattrs through the overlay
on its own files, but never ``trusted.overlay.*`` ones.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

# A file a reload is writing (``ChunkCache.materialise``): never committed.
PART_SUFFIX = ".thaw-part"

_OPAQUE = "trusted.overlay.opaque"
_REDIRECT = "trusted.overlay.redirect"
_WHITEOUT = "trusted.overlay.whiteout"


@dataclass(frozen=True)
class OnDisk:
    """What a path held when it was last loaded or committed."""

    size: int
    mtime_ns: int
    chunks: tuple[str, ...]


class Written(NamedTuple):
    """A file written since: its path in the volume, its stat, and the real
    file to read its bytes from (in ``upper/`` for an overlay)."""

    path: str
    stat: os.stat_result
    source: str


def walk_tree(root: str, known: Mapping[str, OnDisk]) -> tuple[list[Written], list[str]]:
    """Files written (new, or another size or mtime) and known paths gone,
    by a walk of the whole tree at ``root`` (blocking)."""
    written: list[Written] = []
    seen: set[str] = set()
    _walk_merged(root, "", known, written, seen)
    return written, [p for p in known if p not in seen]


def walk_overlay(
    root: str, upper: str, lower: str, known: Mapping[str, OnDisk], unbacked: set[str]
) -> tuple[list[Written], list[str]]:
    """As ``walk_tree`` for the overlay at ``root`` of ``lower`` and
    ``upper``, walking ``upper`` (blocking).

    A known path the walk finds nothing about shows the lower's file, which
    is what was known, except for those in ``unbacked``: paths committed or
    reloaded since the load, which may live in ``upper`` alone (a file
    created and committed, then deleted, leaves no whiteout: the lower never
    had it). Each of those not found in ``upper`` is looked up in the lower;
    one found there as known is removed from ``unbacked`` (an overlay never
    lets a lower file go or change without a trace in ``upper``)."""
    walk = _OverlayWalk(root, upper, lower, known)
    walk.upper_dir("", lower_here=True, xattr_whiteouts=_xattr(upper, _OPAQUE) == b"x")
    gone = walk.gone
    # Known files of the lower that a covering entry of upper hides.
    gone.update(p for p in walk.hidden if p in known and p not in walk.seen)
    for p in list(unbacked):  # a copy: the set is pruned as it goes
        if p in walk.seen or p in gone:
            continue
        if p not in known:
            unbacked.discard(p)
        elif walk.is_covered(p):
            gone.add(p)
        else:
            held = known[p]
            source = os.path.join(lower, p)
            try:
                st = os.lstat(source)
            except (FileNotFoundError, NotADirectoryError):
                gone.add(p)
                continue
            if not stat.S_ISREG(st.st_mode):
                gone.add(p)
            elif st.st_size == held.size and st.st_mtime_ns == held.mtime_ns:
                unbacked.discard(p)
            else:
                # Never made by an overlay, but the merged view shows this file.
                walk.written.append(Written(p, st, source))
    return walk.written, sorted(gone)


class _OverlayWalk:
    def __init__(self, root: str, upper: str, lower: str, known: Mapping[str, OnDisk]) -> None:
        self.root = root
        self.upper = upper
        self.lower = lower
        self.known = known
        self.written: list[Written] = []
        self.seen: set[str] = set()  # regular files of the merged view found
        self.gone: set[str] = set()
        # Paths whose merged view, at them and below, is whole in ``seen``.
        self.covered: set[str] = set()
        # The lower's files below covered paths: gone unless seen.
        self.hidden: list[str] = []

    def upper_dir(self, rel_dir: str, lower_here: bool, xattr_whiteouts: bool) -> None:
        """Walk ``upper/rel_dir``. ``lower_here``: the lower may have a
        directory at ``rel_dir`` merged with it (no opaque or redirected
        directory above), so what an entry hides there is looked up in it."""
        prefix = rel_dir + "/" if rel_dir else ""
        # What the container removes while this walks is skipped: what it
        # leaves (a whiteout, or nothing) is found by the next commit.
        try:
            with os.scandir(os.path.join(self.upper, rel_dir)) as entries:
                found = list(entries)
        except FileNotFoundError:
            return
        for entry in found:
            rel = prefix + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(st.st_mode)
                names = os.listxattr(entry.path, follow_symlinks=False) if is_dir else []
            except FileNotFoundError:
                continue
            if is_dir:
                self._not_a_file(rel)
                opaque = _xattr(entry.path, _OPAQUE) if _OPAQUE in names else None
                if _REDIRECT in names:
                    self.cover(rel, lower_here)
                    _walk_merged(self.root, rel, self.known, self.written, self.seen)
                elif opaque == b"y":
                    self.cover(rel, lower_here)
                    self.upper_dir(rel, lower_here=False, xattr_whiteouts=False)
                else:
                    below = lower_here and _is_dir(os.path.join(self.lower, rel))
                    self.upper_dir(rel, below, xattr_whiteouts=opaque == b"x")
            elif stat.S_ISREG(st.st_mode) and not (
                xattr_whiteouts and st.st_size == 0 and _is_xattr_whiteout(entry.path)
            ):
                if entry.name.endswith(PART_SUFFIX):
                    continue
                self.seen.add(rel)
                held = self.known.get(rel)
                if held is None:
                    # New here: a file over what may have been a directory.
                    self.cover(rel, lower_here)
                    self.written.append(Written(rel, st, entry.path))
                elif held.size != st.st_size or held.mtime_ns != st.st_mtime_ns:
                    self.written.append(Written(rel, st, entry.path))
            else:
                # A whiteout, a symlink, a fifo: no file here, nor below.
                self._not_a_file(rel)
                self.cover(rel, lower_here)

    def _not_a_file(self, rel: str) -> None:
        if rel in self.known:
            self.gone.add(rel)

    def cover(self, rel: str, lower_here: bool) -> None:
        """Nothing at or below ``rel`` shows but what this walk finds there:
        the lower's files below it are hidden (a known path only upper held
        is found covered by ``is_covered``)."""
        self.covered.add(rel)
        if not lower_here:
            return
        below = os.path.join(self.lower, rel)
        if _is_dir(below):
            self.hidden.extend(_files_below(below, rel))

    def is_covered(self, rel: str) -> bool:
        while rel:
            if rel in self.covered:
                return True
            rel = rel.rpartition("/")[0]
        return False


def _walk_merged(
    root: str, rel_top: str, known: Mapping[str, OnDisk], written: list[Written], seen: set[str]
) -> None:
    """Each regular file at or below ``root/rel_top`` into ``seen``, and into
    ``written`` when it differs from what was known."""
    top = os.path.join(root, rel_top) if rel_top else root
    for dirpath, _dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # removed since listed: a known path, it is gone
            if not stat.S_ISREG(st.st_mode) or name.endswith(PART_SUFFIX):
                continue
            seen.add(rel)
            held = known.get(rel)
            if held is None or held.size != st.st_size or held.mtime_ns != st.st_mtime_ns:
                written.append(Written(rel, st, path))


def _files_below(directory: str, rel_top: str) -> Iterable[str]:
    """The paths (as in the volume) of the regular files below ``directory``."""
    for dirpath, _dirnames, filenames in os.walk(directory):
        rel_dir = os.path.relpath(dirpath, directory)
        base = rel_top if rel_dir == "." else f"{rel_top}/{rel_dir}"
        yield from (f"{base}/{name}" for name in filenames)


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise


def _is_xattr_whiteout(path: str) -> bool:
    return _xattr(path, _WHITEOUT) is not None
