"""Files that hold a credential or a secret: readable by their owner only.

One place for "make it once, 0600, never half-written": the admin token, the
Postgres password, the secrets key (and any credential file a service keeps in
the state dir) all go through here, so none of them is ever world-readable,
not even for the instant between creating and chmod-ing a file.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private(path: Path, text: str, *, replace: bool = True) -> bool:
    """Write ``text`` to ``path`` as a 0600 file, atomically: readers see the
    old file or the whole new one. With ``replace=False`` an existing file is
    kept (returns False): two processes making the same file agree on one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)  # fails if it exists: the first writer wins
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_or_create(path: Path, make: Callable[[], str]) -> str:
    """The file's content (stripped), made with ``make()`` (0600) when missing."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    write_private(path, make().strip() + "\n", replace=False)
    return path.read_text().strip()


def private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) a directory other users cannot
    enter: 0700 when made; an existing one loses every permission of others
    and of its group (but a given group's traverse bit, see below)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_mode & stat.S_ISVTX or st.st_uid != os.geteuid():
        # /tmp, or someone else's: closing it would break them, and leaving
        # it open would expose us. Neither silently.
        raise PermissionError(
            f"{path} is shared ({'sticky' if st.st_mode & stat.S_ISVTX else 'not ours'}): "
            "thaw keeps credentials in its state dir; point THAW_STATE_DIR at a directory "
            "of its own"
        )
    # A group's traverse bit stays where a group was given on purpose (not
    # the owner's own): PgCluster.let_through lets Postgres' user in so.
    try:
        own_group = pwd.getpwuid(st.st_uid).pw_gid
    except KeyError:
        own_group = st.st_gid
    keep = 0o710 if st.st_gid != own_group else 0o700
    mode = st.st_mode & 0o777
    if mode & ~keep:
        path.chmod(mode & keep)
    return path

