"""What this machine says about Postgres: where its server binaries are, which
user runs them when we are root, and (from /proc) which processes and shared
memory a postmaster holds."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path


class PgClusterError(RuntimeError):
    pass


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres.

    ``THAW_PG_BINDIR`` wins; then ``pg_config --bindir`` (when it points at a
    server install: on Debian pg_config may come from libpq-dev alone); then
    the highest ``/usr/lib/postgresql/*/bin``; then PATH.
    """
    candidates: list[Path] = []
    if env := os.environ.get("THAW_PG_BINDIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for c in candidates:
        if all((c / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return c
    raise PgClusterError(
        "no Postgres server binaries found (looked at $THAW_PG_BINDIR, pg_config --bindir, "
        "/usr/lib/postgresql/*/bin, PATH); install Debian's postgresql package"
    )


def default_run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("THAW_PG_USER"), "postgres", "nobody"):
        if not name:
            continue
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise PgClusterError("running as root and found no unprivileged user to run Postgres as")


def proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    # A zombie is dead for our purposes: it is only waiting for its parent
    # (a supervisor, say) to reap it.
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def is_postgres(pid: int) -> bool:
    # postmaster.pid may be stale after a crash, and its pid reused by an
    # unrelated process.
    try:
        exe = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
    except OSError:
        return False
    return exe.endswith((b"postgres", b"postmaster"))


def posix_shm_segments(pids: list[int]) -> list[Path]:
    """The /dev/shm files (Postgres' dynamic shared memory) mapped by pids."""
    found: set[Path] = set()
    for pid in pids:
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
            path = fields[5] if len(fields) == 6 else ""
            if path.startswith("/dev/shm/PostgreSQL."):
                found.add(Path(path.removesuffix(" (deleted)")))
    return sorted(found)


def children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                out.append(int(entry.name))
    return out
