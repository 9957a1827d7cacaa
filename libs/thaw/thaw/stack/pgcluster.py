"""A private Postgres cluster: one data directory, one port, 127.0.0.1 only,
and a SCRAM password for every connection (``pgauth``: no ``trust`` line, the
password in a 0600 file beside the data directory).

Used by the embedded stack (`thaw up`) and by the test fixtures, so that both
run Postgres the same way. ``pghost`` finds the binaries and the user to run
them as, and reads the processes a killed cluster leaves. Two ways to run it:

- ``start()`` / ``stop()``: through ``pg_ctl``, the postmaster detached from us.
- ``popen_args()`` + ``popen_kwargs()``: the postmaster in the foreground, for a
  supervisor that wants to own the process. Stop it with ``STOP_SIGNAL``
  (SIGINT, Postgres' "fast" shutdown): SIGTERM is the "smart" shutdown, which
  waits for every client to disconnect and so can hang for as long as a
  service keeps its pool open.

Postgres refuses to run as root. When we are root, every server-side command
runs as ``run_as`` (the ``postgres`` user if the machine has one, else
``nobody``), which owns the data directory. That user must be able to reach
the data directory: a data directory under a 0700 home (``/root/...``) is
refused with a clear error rather than loosening the home's permissions
behind the user's back.

One job, a cluster's life (initdb, settings, start, stop, kill, its
database); it passes 400 lines because each step carries its own Postgres
quirk, explained where it is handled.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pwd
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from thaw.stack import pgauth
from thaw.stack.pghost import (
    PgClusterError,
    alive,
    children,
    default_run_as,
    find_bindir,
    is_postgres,
    posix_shm_segments,
)

log = logging.getLogger(__name__)

# Our settings live in their own file, included from postgresql.conf and
# rewritten by every init(), so a changed setting reaches old clusters too and
# postgresql.conf stays as initdb wrote it (plus one include line).
_CONF_NAME = "thaw.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_NAME}'"
# sun_path is 108 bytes with its NUL; Postgres appends "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PgCluster:
    # Postgres' fast shutdown: roll back open transactions and disconnect
    # clients. (SIGTERM would wait for every client to leave.)
    STOP_SIGNAL = signal.SIGINT

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        user: str = "thaw",
        database: str = "thaw",
        log_file: Path | None = None,
        ephemeral: bool = False,
        settings: dict[str, str] | None = None,
        password_file: Path | None = None,
    ) -> None:
        """``ephemeral``: a throwaway cluster (tests) that trades crash safety
        for speed (no fsync). ``settings``: extra postgresql.conf lines,
        values written verbatim (quote strings yourself). ``password_file``:
        where the password of ``user`` is kept (0600, made by init());
        ``<data_dir>-password`` unless given."""
        self.data_dir = Path(data_dir).absolute()
        self.password_file = (
            Path(password_file).absolute()
            if password_file
            else pgauth.default_password_file(self.data_dir)
        )
        self.port = port
        self.user = user
        self.database = database
        self.log_file = Path(log_file).absolute() if log_file else self.data_dir / "postgres.log"
        self.ephemeral = ephemeral
        self.settings = dict(settings or {})
        self.bindir = find_bindir()
        # Which user the server-side commands (and a supervisor's foreground
        # postmaster) run as: None when we are not root.
        self.run_as: str | None = default_run_as()
        self.socket_dir = self._socket_dir()

    # ------------------------------------------------------------ addresses

    @property
    def password(self) -> str | None:
        return pgauth.read_password(self.password_file)

    @property
    def dsn(self) -> str:
        """The main database's URL, password included: for this process
        (tests, tools), never to be logged or handed to a spec."""
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        pw = self.password
        auth = quote(self.user, safe="") + (f":{quote(pw, safe='')}" if pw else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(database, safe='')}"

    def _socket_dir(self) -> Path:
        # The data directory is the one place the server user surely owns.
        # When its path is too long for a unix socket, fall back to a /tmp
        # directory named after it, so the same cluster always gets the same.
        if len(str(self.data_dir)) <= _MAX_SOCKET_DIR_LEN:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return Path("/tmp") / f"thaw-pg-{digest}"

    # ------------------------------------------------------------ lifecycle

    def init(self) -> None:
        """Create the cluster if the data directory holds none; always
        (re)write our settings file. Idempotent."""
        created = False
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
            created = True
        self._prepare_socket_dir()
        self._write_conf()
        # Rewritten every time, so a cluster made when thaw trusted local
        # users loses its trust lines too.
        self._write_owned(self.data_dir / "pg_hba.conf", pgauth.HBA)
        sql = ""
        if created:
            # Create the database now, in single-user mode, so that a
            # supervisor that runs the postmaster itself (popen_args) finds
            # it there. After _write_conf: an ephemeral cluster skips fsync.
            sql += f"CREATE DATABASE {_quote_ident(self.database)};\n"
        elif self.password is None:
            # A cluster from before passwords: give its user one now.
            if self.is_running():
                raise PgClusterError(
                    f"the Postgres cluster in {self.data_dir} has no password yet and is "
                    "running; stop it (`thaw down`) so that thaw can set one"
                )
            sql += pgauth.alter_role_sql(self.user, pgauth.ensure_password(self.password_file))
        if sql:
            self._run(
                [
                    self.bindir / "postgres",
                    "--single",
                    "-D",
                    str(self.data_dir),
                    "-F",
                    "-c",
                    "exit_on_error=true",
                    "template1",
                ],
                input=sql,
                timeout=60,
            )
            log.info("prepared Postgres cluster in %s", self.data_dir)

    def start(self, timeout_s: float = 30) -> None:
        """Start the postmaster (through pg_ctl, waiting until it accepts
        connections) and create the database if missing. Idempotent."""
        self.init()
        if not self.is_running():
            self._prepare_log_file()
            res = self._run(
                [
                    self.bindir / "pg_ctl",
                    "start",
                    "-w",
                    "-t",
                    str(max(1, math.ceil(timeout_s))),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    # The port on the command line rather than in thaw.conf:
                    # the one value a caller may change between runs.
                    "-o",
                    f"-p {int(self.port)}",
                ],
                check=False,
                timeout=timeout_s + 10,
            )
            if res.returncode != 0:
                raise PgClusterError(
                    f"pg_ctl start failed ({res.returncode}): {res.stderr.strip()}\n"
                    f"--- {self.log_file} (tail) ---\n{self.log_tail()}"
                )
        self.ensure_database()

    def stop(self, mode: str = "fast") -> None:
        """Stop the postmaster and wait until it is gone. Idempotent."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"unknown shutdown mode {mode!r}")
        if not self.is_running():
            return
        res = self._run(
            [
                self.bindir / "pg_ctl",
                "stop",
                "-w",
                "-t",
                "60",
                "-m",
                mode,
                "-D",
                str(self.data_dir),
            ],
            check=False,
            timeout=70,
        )
        if res.returncode != 0 and self.is_running():
            raise PgClusterError(f"pg_ctl stop failed ({res.returncode}): {res.stderr.strip()}")

    def kill(self) -> None:
        """SIGKILL the postmaster and every child of it, as a power cut would,
        and wait until they are gone. The next start() runs crash recovery."""
        pid = self._postmaster_pid()
        if pid is None or not alive(pid):
            return
        # Freeze the postmaster first so that it forks no backend we would miss:
        # once it is dead its children are reparented and no longer findable.
        # Killing the children too matters: an orphaned backend keeps the old
        # shared memory attached, and a new postmaster refuses to start then.
        lock_files = self._lock_files()
        os.kill(pid, signal.SIGSTOP)
        victims = [pid, *children(pid)]
        segments = posix_shm_segments(victims)
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(alive(p) for p in victims):
            if time.monotonic() > deadline:
                raise PgClusterError(f"postgres processes {victims} survived SIGKILL")
            time.sleep(0.01)
        # The dead postmaster may linger as a zombie until its parent (init,
        # a supervisor) reaps it, and Postgres takes a zombie's pid for a live
        # postmaster holding the lock files. Every process is dead, so the
        # locks are stale: drop them, as a reboot would.
        # Likewise its POSIX shared memory (which a power cut would wipe too):
        # with postmaster.pid gone, no new postmaster can find and free it.
        for f in [*lock_files, *segments]:
            f.unlink(missing_ok=True)

    def let_through(self, directory: Path) -> None:
        """Let the server user traverse, not list, ``directory``: a private
        (0700) directory above the data dir, such as the stack's state dir.
        Its group becomes the server user's, with the traverse bit alone."""
        if not self.run_as:
            return  # the server runs as us
        os.chown(directory, -1, pwd.getpwnam(self.run_as).pw_gid)
        directory.chmod((directory.stat().st_mode & 0o700) | 0o010)

    def is_running(self) -> bool:
        """Whether the postmaster of this data directory is alive (not
        whether it accepts connections yet)."""
        pid = self._postmaster_pid()
        return pid is not None and alive(pid) and is_postgres(pid)

    def ensure_database(self) -> None:
        """Create ``self.database`` on the running server if it is missing."""
        exists = self._psql(
            "postgres",
            f"SELECT 1 FROM pg_database WHERE datname = {_quote_literal(self.database)}",
        )
        if exists.strip() == "1":
            return
        try:
            self._psql("postgres", f"CREATE DATABASE {_quote_ident(self.database)}")
        except PgClusterError as exc:
            # Two starters racing: the other one created it.
            if "already exists" not in str(exc):
                raise

    # ------------------------------------------------------------ supervisor

    def popen_args(self) -> list[str]:
        """argv of the postmaster in the foreground (logs to stderr). Call
        init() first; run it as ``run_as`` (see popen_kwargs()); stop it with
        ``STOP_SIGNAL``. The database is created by init() when it creates the
        cluster; call ensure_database() once it is up for older clusters."""
        return [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(int(self.port))]

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for subprocess.Popen / asyncio.create_subprocess_exec
        that run popen_args() as ``run_as`` (empty when we are not root)."""
        kw: dict[str, Any] = {"cwd": str(self.data_dir)}
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            kw.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        return kw

    # ------------------------------------------------------------ internals

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise PgClusterError(f"{self.data_dir} is neither empty nor a Postgres cluster")
        self._chown(self.data_dir)
        self.data_dir.chmod(0o700)
        self._check_reachable(self.data_dir)
        password = pgauth.ensure_password(self.password_file)
        with tempfile.TemporaryDirectory(prefix="thaw-initdb-") as tmp:
            # initdb (run as the server user) reads the password from a file:
            # a private copy it can read, gone once initdb is done.
            pwfile = Path(tmp) / "pw"
            pwfile.write_text(password + "\n")
            self._chown(Path(tmp))
            self._chown(pwfile)
            self._initdb_with(pwfile)
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as f:
            f.write(f"\n# thaw's settings (rewritten by PgCluster.init()):\n{_INCLUDE_LINE}\n")

    def _initdb_with(self, pwfile: Path) -> None:
        argv: list[str | Path] = [
            self.bindir / "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth",
            pgauth.METHOD,
            "--pwfile",
            str(pwfile),
            "-E",
            "UTF8",
            # The C locale: always present, and no surprise collation changes
            # when the machine's locales are upgraded.
            "--no-locale",
        ]
        if self.ephemeral:
            argv.append("--no-sync")
        self._run(argv, timeout=120)

    def _write_conf(self) -> None:
        settings: dict[str, str] = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": _quote_literal(str(self.socket_dir)),
            "unix_socket_permissions": "0700",
            # Every service keeps a pool, and tests make one per database.
            "max_connections": "200",
        }
        if self.ephemeral:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        settings |= self.settings
        body = "".join(f"{k} = {v}\n" for k, v in settings.items())
        self._write_owned(
            self.data_dir / _CONF_NAME,
            "# Written by thaw's PgCluster.init(); do not edit.\n" + body,
        )

    def _prepare_socket_dir(self) -> None:
        if self.socket_dir == self.data_dir:
            return
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        st = self.socket_dir.lstat()
        # A shared /tmp: refuse a directory someone else planted there.
        if not self.socket_dir.is_dir() or st.st_uid not in (os.geteuid(), self._uid()):
            raise PgClusterError(f"socket directory {self.socket_dir} is not ours")
        self._chown(self.socket_dir)

    def _prepare_log_file(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch(mode=0o600, exist_ok=True)
        self._chown(self.log_file)

    def _lock_files(self) -> list[Path]:
        # postmaster.pid: pid, data dir, start time, port, socket dir, ...
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().split("\n")
        except OSError:
            return []
        files = [self.data_dir / "postmaster.pid"]
        if len(lines) > 4 and lines[3].strip().isdigit() and lines[4].strip():
            files.append(Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock")
        return files

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def _psql(self, database: str, sql: str) -> str:
        res = self._run(
            [
                self.bindir / "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-c",
                sql,
            ],
            as_server_user=False,
            timeout=30,
            env={"PGPASSWORD": self.password or ""},
        )
        return res.stdout

    def _uid(self) -> int:
        return pwd.getpwnam(self.run_as).pw_uid if self.run_as else os.geteuid()

    def _chown(self, path: Path) -> None:
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _write_owned(self, path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        self._chown(tmp)
        os.replace(tmp, path)

    def _check_reachable(self, path: Path) -> None:
        if not self.run_as:
            return
        res = self._run(["test", "-w", str(path)], check=False, timeout=10, cwd="/")
        if res.returncode != 0:
            raise PgClusterError(
                f"Postgres runs as {self.run_as!r} (it refuses root), and that user cannot reach "
                f"{path}: one of its parent directories is closed to others (a 0700 home?). "
                "Put the data directory somewhere that user can traverse (e.g. set THAW_STATE_DIR "
                "to /var/lib/thaw), or run thaw as an unprivileged user."
            )

    def _run(
        self,
        argv: list[str | Path],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60,
        as_server_user: bool = True,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        # A clean environment: PG* variables of the caller (PGDATA, PGPORT,
        # PGHOST...) would silently redirect these tools elsewhere. ``env``
        # (PGPASSWORD for psql) stays in the child: a process's environment
        # is readable by its own user only.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | (env or {})
        env["LC_ALL"] = "C"
        kw: dict[str, Any] = {}
        if as_server_user and self.run_as:
            pw = pwd.getpwnam(self.run_as)
            kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            env["HOME"] = pw.pw_dir
        if cwd is None:
            cwd = str(self.data_dir) if self.data_dir.is_dir() else "/"
        try:
            res = subprocess.run(
                [str(a) for a in argv],
                check=False,
                input=input,
                capture_output=True,
                text=True,
                env=env,
                cwd=cwd,
                timeout=timeout,
                **kw,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgClusterError(f"{Path(str(argv[0])).name} timed out after {timeout}s") from exc
        if check and res.returncode != 0:
            raise PgClusterError(
                f"{Path(str(argv[0])).name} failed ({res.returncode}): "
                f"{(res.stderr or res.stdout).strip()}"
            )
        return res
