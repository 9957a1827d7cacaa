"""The embedded stack's supervisor: what `thaw up` runs.

It starts nats-server, Postgres and the blob directory, migrates the database,
then starts every service (``python -m thaw_<name>``), each its own child
process with its log in ``<state_dir>/logs/<part>.log``; waits until every part
is healthy; and then supervises: a part that dies is restarted with backoff
(0.5 s doubling to 30 s, reset once it has stayed up for 30 s). SIGTERM/SIGINT
stop the services first, then Postgres (fast shutdown) and NATS.

Children run in their own sessions, so a terminal's Ctrl-C reaches only the
supervisor, which stops them in order; each is also given a parent-death
signal, so a supervisor killed with SIGKILL does not leave them running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from thaw_core import permissions
from thaw_core.config import Settings

from thaw.stack import health
from thaw.stack.children import (
    down_text,
    exit_text,
    kill_leftovers,
    start_process,
    stop_leftovers,
    stop_process,
    tail,
)
from thaw.stack.parts import (
    AGENT,
    SERVICES,
    Part,
    blob_part,
    is_nats,
    nats_auth,
    nats_parts,
    postgres_part,
    service_part,
)
from thaw.stack.state import StackLock, StackPaths

log = logging.getLogger("thaw.stack")
# A connection of a start-up step (a Bus, a Database).
C = TypeVar("C")

INITIAL_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
# A part that stayed up this long is "stable": its next crash restarts it at once.
STABLE_AFTER_S = 30.0
POLL_S = 0.2

class StackError(Exception):
    """A failure to report to the user as is (no traceback)."""


class StackAlreadyRunning(StackError):
    pass


class StartupFailed(StackError):
    pass


@dataclass(frozen=True)
class StackInfo:
    gateway_url: str
    admin_token: str
    state_dir: Path
    logs_dir: Path
    pid: int


class Stack:
    def __init__(
        self,
        settings: Settings,
        *,
        with_agent: bool = False,
        startup_timeout_s: float = 60.0,
        on_ready: Callable[[StackInfo], None] | None = None,
    ) -> None:
        self.settings = settings
        self.paths = StackPaths(settings.state_dir)
        self.with_agent = with_agent
        self.startup_timeout_s = startup_timeout_s
        self.on_ready = on_ready
        self.parts: dict[str, Part] = {}
        self.state = "starting"
        self._stop = asyncio.Event()
        self._stopping = False
        self._force = False
        self._lock = StackLock(self.paths)
        self._pg: Any = None

    # ------------------------------------------------------------ entry

    def preflight(self) -> None:
        """Refuse early when a stack already runs on this state dir."""
        pid = self.paths.live_pid()
        if pid is not None or self.paths.lock_held():
            raise StackAlreadyRunning(
                f"a thaw stack is already running on {self.paths.state_dir} "
                f"(pid {pid or '?'}); stop it with `thaw down` or use another THAW_STATE_DIR"
            )

    async def run(self) -> int:
        """Start, supervise until told to stop, stop. Returns the exit code."""
        self.paths.make()
        if not self._lock.acquire():
            self.preflight()
            raise StackAlreadyRunning(f"a thaw stack is already running on {self.paths.state_dir}")
        loop = asyncio.get_running_loop()
        try:
            self._stop_leftovers()
            self.paths.pid_file.write_text(f"{os.getpid()}\n")
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.add_signal_handler(sig, self._on_signal, sig)
            monitor = asyncio.create_task(self._monitor(), name="stack-monitor")
            rc = 0
            try:
                starting = asyncio.create_task(self._start_up())
                stop_wait = asyncio.create_task(self._stop.wait())
                await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not starting.done():
                    log.info("stop requested during start-up")
                    starting.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await starting
                else:
                    info = starting.result()  # raises StartupFailed
                    self.state = "ready"
                    self._write_state()
                    if self.on_ready is not None:
                        self.on_ready(info)
                    await self._stop.wait()
                stop_wait.cancel()
            except StartupFailed as exc:
                log.error("%s", exc)
                rc = 1
            except Exception:
                log.exception("the stack failed")
                rc = 1
            finally:
                self.state = "stopping"
                self._stopping = True
                self._write_state()
                monitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await monitor
                await self._stop_all()
            return rc
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
            with contextlib.suppress(OSError):
                self.paths.state_file.unlink()
            with contextlib.suppress(OSError):
                if self.paths.read_pid() == os.getpid():
                    self.paths.pid_file.unlink()
            self._lock.release()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("second %s: killing what is left", sig.name)
            self._force = True
            return
        log.info("%s received: stopping the stack", sig.name)
        self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------ start-up

    async def _start_up(self) -> StackInfo:
        s = self.settings
        deadline = time.monotonic() + self.startup_timeout_s
        log.info("starting the thaw stack in %s", self.paths.state_dir)

        # NATS first: it needs no preparation.
        self.paths.nats_dir.mkdir(exist_ok=True)
        nats = nats_parts(s, self.paths)
        if self.with_agent:
            # The embedded node's own NATS user, in the configuration before
            # the servers read it.
            nats_auth(self.paths).node_creds(s.node_id)
        for part in nats:
            self.parts[part.name] = part
            self._spawn(part)

        # Postgres: initdb on the first run only (the data dir is reused after).
        from thaw.stack.pgcluster import PgCluster

        pg = PgCluster(
            self.paths.postgres_dir,
            s.postgres_port,
            log_file=self.paths.log("postgres"),
            password_file=s.database_password_path(),
        )
        self._pg = pg
        # The state dir is ours alone (0700), but Postgres' user must reach
        # its data dir inside it.
        pg.let_through(self.paths.state_dir)
        if not (self.paths.postgres_dir / "PG_VERSION").exists():
            log.info("initialising Postgres in %s", self.paths.postgres_dir)
        try:
            # initdb the first time; (re)writes thaw's settings file every time.
            await asyncio.to_thread(pg.init)
        except Exception as exc:
            raise StartupFailed(f"cannot prepare Postgres: {exc}") from exc
        self.parts["postgres"] = postgres_part(
            s, self.paths, list(pg.popen_args()), pg.popen_kwargs()
        )
        self._spawn(self.parts["postgres"])

        # The blob store: a directory for the file backend, nothing to run.
        self.parts["blob"] = blob_part(s)
        if s.blob_url.startswith("file://"):
            Path(s.blob_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        self._write_state()

        await self._wait_healthy([*(p.name for p in nats), "postgres", "blob"], deadline)
        await self._provision_streams(deadline)
        await self._migrate(deadline)
        token = self.paths.admin_token()
        assert token is not None

        names = list(SERVICES) + ([AGENT] if self.with_agent else [])
        for name in names:
            self.parts[name] = service_part(name, s, self.paths)
            self._spawn(self.parts[name])
        self._write_state()
        await self._wait_healthy(list(self.parts), deadline)
        log.info("the thaw stack is up: gateway %s", s.gateway_url)
        return StackInfo(
            gateway_url=s.gateway_url,
            admin_token=token,
            state_dir=self.paths.state_dir,
            logs_dir=self.paths.logs_dir,
            pid=os.getpid(),
        )

    async def _provision_streams(self, deadline: float) -> None:
        """Create the streams here (as admin): of the services only the
        gateway may, and the others may start before it."""
        from thaw_core.bus import Bus

        await _connected_do(
            Bus.connect(
                self.settings.nats_url,
                name="thaw-stack",
                creds=nats_auth(self.paths).creds(permissions.ADMIN),
                connect_timeout_s=max(1.0, deadline - time.monotonic()),
                replicas=self.settings.nats_replicas,
            ),
            lambda bus: bus.provision(),
            lambda bus: bus.close(grace_s=1),
            connecting="NATS to provision streams",
            failed="cannot provision the NATS streams",
        )

    async def _migrate(self, deadline: float) -> None:
        """Migrate once here, so the services start against an up-to-date schema."""
        from thaw_core.db import Database

        await _connected_do(
            Database.connect(
                self.settings.database_url,
                password=self.settings.database_password(),
                max_size=1,
                connect_timeout_s=max(1.0, deadline - time.monotonic()),
            ),
            lambda db: db.migrate(),
            lambda db: db.close(),
            connecting="Postgres to migrate",
            failed="database migration failed",
        )

    async def _wait_healthy(self, names: list[str], deadline: float) -> None:
        while True:
            results = await self.probe(names)
            bad = {n: r for n, r in results.items() if r != "ok"}
            if not bad:
                return
            if time.monotonic() >= deadline:
                lines = [f"not healthy after {self.startup_timeout_s:g}s:"]
                for n, r in bad.items():
                    part = self.parts.get(n)
                    lines.append(f"  {n}: {r}")
                    if part is not None and part.log_path is not None:
                        lines.append(f"  --- last lines of {part.log_path}:")
                        text = tail(part.log_path, 20, since=part.log_offset)
                        lines.extend("    " + ln for ln in text.splitlines())
                raise StartupFailed("\n".join(lines))
            await asyncio.sleep(0.25)

    async def probe(self, names: Iterable[str]) -> dict[str, str]:
        """Each named part's health: "ok" or the error."""
        s = self.settings
        names = list(names)
        out: dict[str, str] = {}
        checks: dict[str, Any] = {}
        services = []
        for n in names:
            part = self.parts.get(n)
            if part is not None and part.has_process and part.pid is None:
                out[n] = down_text(part)
            elif part is not None and is_nats(part):
                # Each server by itself: a cluster is healthy when all are.
                checks[n] = health.check_nats(
                    f"nats://127.0.0.1:{part.port}", nats_auth(self.paths).creds(permissions.ADMIN)
                )
            elif n == "postgres":
                checks[n] = health.check_postgres(s)
            elif n == "blob":
                checks[n] = health.check_blob(s.blob_url)
            else:
                services.append(n)
        if services:
            admin = nats_auth(self.paths).creds(permissions.ADMIN)
            checks["_services"] = health.check_services(s.nats_url, services, admin)
        results = await asyncio.gather(*checks.values())
        for key, res in zip(checks, results):
            if key == "_services":
                out.update({n: h.status for n, h in res.items()})
            else:
                out[key] = res
        return {n: out[n] for n in names}

    # ------------------------------------------------------------ processes

    def _spawn(self, part: Part) -> None:
        try:
            start_process(part)
        except OSError as exc:
            log.error("cannot start %s: %s", part.name, exc)
            self._schedule_restart(part, time.monotonic(), f"failed to start ({exc})")
            return
        log.info("started %s (pid %d)", part.name, part.pid)
        self._write_state()

    def _schedule_restart(self, part: Part, now: float, why: str) -> None:
        ran = now - part.started_at if part.started_at else 0.0
        # A part that had been up a while restarts at once; one that keeps
        # failing waits longer each time.
        part.failures = 0 if ran >= STABLE_AFTER_S else part.failures + 1
        delay = min(MAX_BACKOFF_S, INITIAL_BACKOFF_S * 2 ** max(0, part.failures - 1))
        part.restart_at = now + delay
        log.warning("%s %s after %.1fs; restarting in %.1fs", part.name, why, ran, delay)

    async def _monitor(self) -> None:
        """Restart parts that die (with backoff) until the stack stops."""
        while True:
            now = time.monotonic()
            for part in list(self.parts.values()):
                if not part.has_process or self._stopping:
                    continue
                if part.proc is None:
                    if part.restart_at is not None and now >= part.restart_at:
                        part.restarts += 1
                        self._spawn(part)
                    continue
                rc = part.proc.poll()
                if rc is None:
                    continue
                part.last_exit = rc
                part.proc = None
                self._schedule_restart(part, now, f"exited with {exit_text(rc)}")
                self._write_state()
            await asyncio.sleep(POLL_S)

    async def _stop_all(self) -> None:
        services = [p for p in self.parts.values() if p.kind == "service"]
        if services:
            log.info("stopping services")
            await asyncio.gather(*(self._stop_part(p) for p in services))
        for part in [self.parts.get("postgres"), *filter(is_nats, self.parts.values())]:
            if part is not None:
                log.info("stopping %s", part.name)
                await self._stop_part(part)
        # Anything else started with our marker (e.g. Postgres backends that
        # outlived a killed postmaster) goes too.
        await asyncio.to_thread(kill_leftovers, self.paths.state_dir)
        log.info("the thaw stack is stopped")

    async def _stop_part(self, part: Part) -> None:
        await stop_process(part, force=self._force)

    def _stop_leftovers(self) -> None:
        """Stop processes of an earlier stack on this state dir whose supervisor
        died without stopping them (we hold the lock, so none is supervised)."""
        stop_leftovers(self.paths.state_dir)

    # ------------------------------------------------------------ state file

    def _write_state(self) -> None:
        env = self.settings.to_env()
        env.pop("THAW_TOKEN", None)
        state = {
            "pid": os.getpid(),
            "state": self.state,
            "state_dir": str(self.paths.state_dir),
            "gateway_url": self.settings.gateway_url,
            "with_agent": self.with_agent,
            "settings": env,
            "parts": {
                name: {
                    "kind": p.kind,
                    "pid": p.pid,
                    "port": p.port,
                    "port_label": p.port_label,
                    "restarts": p.restarts,
                    "last_exit": p.last_exit,
                    "log": str(p.log_path) if p.log_path else None,
                }
                for name, p in self.parts.items()
            },
        }
        try:
            self.paths.write_state(state)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.paths.state_file, exc)


async def _connected_do(
    connect: Awaitable[C],
    act: Callable[[C], Awaitable[Any]],
    close: Callable[[C], Awaitable[Any]],
    *,
    connecting: str,
    failed: str,
) -> None:
    """Connect, act, close: a start-up step on a connection of its own, whose
    failure to connect or to act stops the start with ``StartupFailed``."""
    try:
        conn = await connect
    except Exception as exc:
        raise StartupFailed(f"cannot connect to {connecting}: {exc}") from exc
    try:
        await act(conn)
    except Exception as exc:
        raise StartupFailed(f"{failed}: {exc}") from exc
    finally:
        await close(conn)
