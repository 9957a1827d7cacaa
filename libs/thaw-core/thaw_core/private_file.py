"""Files that hold a credential or a secret: readable by their owner only.

One place for "make it once, 0600, never half-written": the admin token, the
Postgres password, the secrets key (and any credential file a service keeps in
the state dir) all go through here, so none of them is ever world-readable,
not even for the instant between creating and chmod-ing a file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
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
    and its group's read and write (a group's traverse bit stays: the
    embedded stack lets Postgres' user through its state dir that way)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o067:
        path.chmod(mode & 0o710)
    return path
