"""A volume's flat entries seen as a tree: a directory's children (listdir),
what a removal takes, and where copies land. Directories are implied by the
paths under them, or are entries of their own when empty."""

from __future__ import annotations

import posixpath

import msgspec
from thaw_core.schema import VolumeEntry
from thaw_core.volumes import ancestors, is_under


def _under(entries: list[VolumeEntry], path: str) -> list[VolumeEntry]:
    return [e for e in entries if not e.deleted and is_under(e.path, path)]


def find(entries: list[VolumeEntry], path: str) -> VolumeEntry | None:
    """The entry at ``path``: a file, an explicit directory, or one implied
    by what is under it (the root is always a directory)."""
    below = _under(entries, path)
    for e in below:
        if e.path == path:
            return e
    if below or not path:
        return VolumeEntry(path=path, kind="dir", mtime=max((e.mtime for e in below), default=0))
    return None


def listing(entries: list[VolumeEntry], path: str, recursive: bool) -> list[VolumeEntry] | None:
    """What ``listdir(path, recursive)`` shows: a file alone, else the
    directory's children (every descendant when ``recursive``), directories
    included, by path; None when nothing is at ``path``."""
    here = find(entries, path)
    if here is None:
        return None
    if here.kind == "file":
        return [here]
    found: dict[str, VolumeEntry] = {}
    depth = len(path.split("/")) if path else 0
    for e in _under(entries, path):
        if e.path == path:
            continue
        dirs = ancestors(e.path)[depth:]
        for d in dirs if recursive else dirs[:1]:
            seen = found.get(d)
            if seen is None or (seen.kind == "dir" and seen.mtime < e.mtime):
                found[d] = VolumeEntry(
                    path=d, kind="dir", mtime=max(e.mtime, seen.mtime if seen else 0)
                )
        if recursive or not dirs:
            found[e.path] = e
    return sorted(found.values(), key=lambda e: e.path)


def copies(
    entries: list[VolumeEntry], sources: list[str], dst: str, recursive: bool
) -> list[VolumeEntry] | str:
    """The entries that copying ``sources`` to ``dst`` writes (the same chunks
    under new paths), or why it cannot."""
    target = find(entries, dst)
    into = len(sources) > 1 or (target is not None and target.kind == "dir")
    out: list[VolumeEntry] = []
    for src in sources:
        here = find(entries, src)
        if here is None or not src:
            return f"no file or directory {src!r} in the volume" if src else "cannot copy the root"
        base = posixpath.join(dst, posixpath.basename(src)) if into else dst
        if base == src or is_under(base, src) and here.kind == "dir":
            return f"cannot copy {src!r} into itself"
        if here.kind == "file":
            out.append(msgspec.structs.replace(here, path=base, version=0))
            continue
        if not recursive:
            return f"{src!r} is a directory; recursive=True copies it with everything under it"
        for e in _under(entries, src):
            out.append(msgspec.structs.replace(e, path=base + e.path[len(src) :], version=0))
    return out
