"""`thaw up`, `thaw down`, `thaw status`: the embedded stack."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from thaw_core.config import ConfigError, Settings
from thaw_core.logs import setup_logging

from thaw.stack import (
    Stack,
    StackError,
    StackInfo,
    StackPaths,
    stack_status,
    start_detached,
    stop_stack,
)
from thaw.stack.detach import DETACHED_ENV

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    sys.exit(code)


def _print_ready(info: StackInfo, *, detached: bool) -> None:
    out.print(f"[bold green]thaw is up[/bold green]  (state dir {info.state_dir})")
    out.print(f"  gateway      {info.gateway_url}")
    out.print(f"  admin token  {info.admin_token}")
    out.print(f"  logs         {info.logs_dir}/")
    out.print(
        f"  export THAW_GATEWAY_URL={info.gateway_url} THAW_TOKEN={info.admin_token}",
        soft_wrap=True,
    )
    if detached:
        out.print(f"  supervisor pid {info.pid}; stop it with `thaw down`")
    else:
        out.print("  Ctrl-C stops the stack")


@click.command()
@click.option("--with-agent", is_flag=True, help="Also run a node agent on this machine.")
@click.option(
    "--detach", "-d", is_flag=True, help="Run in the background; return once the stack is healthy."
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=float,
    help="Seconds every part gets to become healthy.",
)
@click.option(
    "--nats-cluster",
    type=click.IntRange(1, 5),
    default=None,
    help="Run N nats-servers as one cluster (streams kept on 3 of them) instead of one.",
)
def up(with_agent: bool, detach: bool, timeout: float, nats_cluster: int | None) -> None:
    """Start the embedded stack: NATS, Postgres, blob dir and every service."""
    env = dict(os.environ)
    if nats_cluster is not None:
        env["THAW_NATS_CLUSTER_SIZE"] = str(nats_cluster)
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        _fail(str(exc))
    paths = StackPaths(settings.state_dir)
    running = paths.live_pid()
    if running is not None or paths.lock_held():
        _fail(
            f"a thaw stack is already running on {paths.state_dir} (pid {running or '?'}); "
            "stop it with `thaw down`, or set THAW_STATE_DIR to start another"
        )
    if detach:
        try:
            info = start_detached(settings, with_agent=with_agent, startup_timeout_s=timeout)
        except StackError as exc:
            _fail(str(exc))
        _print_ready(info, detached=True)
        return

    detached = os.environ.get(DETACHED_ENV) == "1"
    setup_logging(settings.log_level, json_lines=False)
    stack = Stack(
        settings,
        with_agent=with_agent,
        startup_timeout_s=timeout,
        on_ready=None if detached else (lambda info: _print_ready(info, detached=False)),
    )
    try:
        rc = asyncio.run(stack.run())
    except StackError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        rc = 130
    sys.exit(rc)


@click.command()
@click.option("--timeout", default=60.0, show_default=True, type=float)
def down(timeout: float) -> None:
    """Stop the embedded stack (services first, then Postgres and NATS)."""
    settings = Settings.from_env()
    ok, message = stop_stack(settings, timeout_s=timeout)
    (out if ok else err).print(message)
    sys.exit(0 if ok else 1)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Health of every part of the embedded stack; exit code 0 only if all are healthy."""
    settings = Settings.from_env()
    st = asyncio.run(stack_status(settings))
    if as_json:
        print(
            json.dumps(
                {
                    "state_dir": st.state_dir,
                    "supervisor_pid": st.supervisor_pid,
                    "state": st.state,
                    "healthy": st.healthy,
                    "gateway_url": st.gateway_url,
                    "parts": [
                        {
                            "name": p.name,
                            "kind": p.kind,
                            "pid": p.pid,
                            "health": p.health,
                            "port": p.port,
                            "restarts": p.restarts,
                        }
                        for p in st.parts
                    ],
                },
                indent=2,
            )
        )
        sys.exit(0 if st.healthy else 1)
    if st.supervisor_pid is None:
        out.print(f"no thaw stack is running on {st.state_dir}")
        sys.exit(1)
    table = Table(title=f"thaw stack {st.state_dir} (pid {st.supervisor_pid}, {st.state})")
    table.add_column("part")
    table.add_column("pid", justify="right")
    table.add_column("health")
    table.add_column("port")
    table.add_column("restarts", justify="right")
    for p in st.parts:
        table.add_row(
            p.name,
            str(p.pid) if p.pid else "-",
            "[green]ok[/green]" if p.ok else f"[red]{escape(p.health)}[/red]",
            p.port,
            str(p.restarts),
        )
    out.print(table)
    if st.gateway_url:
        out.print(f"gateway {st.gateway_url}")
    sys.exit(0 if st.healthy else 1)


COMMANDS = [up, down, status]
