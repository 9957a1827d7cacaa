"""A fast digest of an unpacked snapshot in the node's cache, checked before
every restore from it.

The archive's sha256 proves what came from the blob store; once unpacked, the
cache entry could still change under us (a bad disk, a stray write, someone
editing ``pages-1.img``), and CRIU would restore whatever it finds. So the
entry's digest is computed when it enters the cache (``DIGEST_FILE``) and
again before each restore: XXH3-128 over every entry's kind, relative path,
size and content (``images/``, ``upper/`` and ``info.json``), about ten times
faster than sha256. It runs beside the restore and gates only its Ready
(``ContainerManager._restore``), so it costs a restore only what it takes
beyond it; ``tests/bench/test_snapshot_bench.py`` prints both.
"""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path

import xxhash

DIGEST_FILE = "digest"
# What the digest covers, in this order; the info file is the cache's own.
PARTS = ("images", "upper")


def _feed_file(h: xxhash.xxh3_128, path: str, size: int) -> None:
    if size == 0:
        return
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        h.update(m)


def tree_digest(root: Path, info: bytes) -> str:
    """The digest of the cache entry at ``root`` whose info file holds
    ``info`` (raises OSError when a part is missing)."""
    h = xxhash.xxh3_128()
    for part in PARTS:
        top = root / part
        if not top.is_dir():
            raise FileNotFoundError(f"{top} is missing")
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, root)
            h.update(f"d\0{rel_dir}\0".encode())
            # A symlink to a directory is listed with the directories, not walked.
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for name in sorted(filenames + links):
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                rel = os.path.join(rel_dir, name)
                mode = stat.S_IMODE(st.st_mode)
                if stat.S_ISREG(st.st_mode):
                    h.update(f"f\0{rel}\0{mode}\0{st.st_size}\0".encode())
                    _feed_file(h, path, st.st_size)
                elif stat.S_ISLNK(st.st_mode):
                    h.update(f"l\0{rel}\0{os.readlink(path)}\0".encode())
                else:  # whiteouts (0/0 char devices) and other special files
                    h.update(f"s\0{rel}\0{st.st_mode}\0{st.st_rdev}\0".encode())
    h.update(b"i\0" + info)
    return h.hexdigest()


def write_digest(root: Path, info: bytes) -> None:
    """Record the digest of the entry, whose info file will hold ``info``."""
    (root / DIGEST_FILE).write_text(tree_digest(root, info))


def digest_problem(root: Path, info_file: str) -> str | None:
    """Why the entry at ``root`` is not what entered the cache; None when it is."""
    try:
        recorded = (root / DIGEST_FILE).read_text().strip()
    except OSError:
        return "it has no recorded digest"
    try:
        now = tree_digest(root, (root / info_file).read_bytes())
    except OSError as e:
        return f"it cannot be read: {e}"
    if now != recorded:
        return f"its content changed (xxh3 {now}, recorded {recorded})"
    return None
