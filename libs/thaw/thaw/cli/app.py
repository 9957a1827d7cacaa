"""`thaw app list | show | stop | logs`."""

from __future__ import annotations

import time
from datetime import datetime

import click
from rich.table import Table
from thaw_core.api import AppDetail, AppInfo

from thaw.cli._call_columns import CALL_COLUMNS
from thaw.cli._common import ago, console, escape, expected_errors
from thaw.cli._listing import Cell, Column, json_option, print_json, print_list

# How many of an app's latest calls `app show` lists.
RECENT_CALLS = 10


@click.group("app")
def app_group() -> None:
    """Deployed apps."""


def _state(a: AppInfo) -> Cell:
    return (a.state, "green" if a.state == "deployed" else "dim")


def _kind(a: AppInfo) -> Cell:
    return ("ephemeral", "yellow") if a.ephemeral else "persistent"


APP_COLUMNS: list[Column[AppInfo]] = [
    Column("id", lambda a: a.app_id, whole=True),
    Column("name", lambda a: a.name, whole=True),
    Column("state", _state),
    Column("kind", _kind),
    Column("version", lambda a: str(a.version)),
    Column("functions", lambda a: ",".join(a.functions)),
    Column("containers", lambda a: str(a.containers)),
    Column("web", lambda a: " ".join(a.web_urls[k] for k in sorted(a.web_urls))),
    Column("updated", lambda a: ago(a.updated_at or a.created_at)),
]


@app_group.command("list")
@click.option("--all", "-a", "show_all", is_flag=True, help="Also list stopped apps.")
@json_option
@expected_errors
def list_apps(show_all: bool, as_json: bool) -> None:
    """List the apps: id, name, state, ephemeral or not, version, functions, containers."""
    from thaw._sync import background_loop
    from thaw.client import current

    apps = background_loop().run(current().apps())
    shown = sorted((a for a in apps if show_all or a.state == "deployed"), key=lambda a: a.name)
    empty = "no apps" + ("" if show_all else " deployed (--all shows stopped ones)")
    print_list(shown, APP_COLUMNS, as_json=as_json, empty=empty)


@app_group.command("show")
@click.argument("app")
@json_option
@expected_errors
def show_app(app: str, as_json: bool) -> None:
    """Show an app (by id or name): its schedules (next and last fire, last run's status)
    and its recent calls."""
    from thaw._sync import background_loop
    from thaw.client import current

    detail = background_loop().run(current().app(app))
    if as_json:
        print_json(detail)
        return
    a = detail.app
    state = "[green]deployed[/green]" if a.state == "deployed" else "[dim]stopped[/dim]"
    if a.ephemeral:
        state += " [yellow](ephemeral)[/yellow]"
    console().print(
        f"[bold]{escape(a.name)}[/bold] {escape(a.app_id)} {state}, version {a.version}, "
        f"{a.containers} container(s); functions: {escape(', '.join(a.functions))}"
    )
    for name, url in sorted(a.web_urls.items()):
        console().print(f"web {escape(name)}: {escape(url)}")
    if detail.schedules:
        console().print(_schedules(detail))
    else:
        console().print("[dim]no scheduled functions[/dim]")
    calls = background_loop().run(current().recent_calls(a.name, limit=RECENT_CALLS)).calls
    console().print(f"[bold]recent calls[/bold] (thaw call list --app {escape(a.name)})")
    print_list(calls, CALL_COLUMNS, as_json=False, empty="no calls yet")


def _schedules(detail: AppDetail) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("function", "schedule", "next fire", "last fire", "last run", "last call"):
        table.add_column(column)
    for s in detail.schedules:
        table.add_row(
            escape(s.function),
            escape(s.schedule),
            _at(s.next_fire_at),
            _at(s.last_fire_at),
            escape(s.last_status or "-"),
            escape(s.last_call_id or "-"),
        )
    return table


def _at(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


@app_group.command("stop")
@click.argument("app")
@expected_errors
def stop_app(app: str) -> None:
    """Stop an app (by id or name): its functions take no more calls and its containers go."""
    from thaw._sync import background_loop
    from thaw.client import current

    info = background_loop().run(current().stop_app(app))
    console().print(f"[bold]{escape(info.name)}[/bold] (version {info.version}) stopped")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: float) -> float:
    """``90s``, ``10m``, ``2h``, ``1d`` ago, or an ISO 8601 time, as a timestamp."""
    number, unit = value[:-1], value[-1:]
    if unit in _UNITS:
        try:
            return now - float(number) * _UNITS[unit]
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(value).astimezone().timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give a duration (30s, 10m, 2h, 1d) or a time (2024-05-01T12:00)"
        ) from None


@app_group.command("logs")
@click.argument("app")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--function", help="Only this function's containers.")
@click.option("--container", help="Only this container (its id, or the start of it).")
@click.option("--since", help="Only lines since then: 10m, 2h, 1d, or a time (ISO 8601).")
@expected_errors
def app_logs(
    app: str, follow: bool, function: str | None, container: str | None, since: str | None
) -> None:
    """Print an app's container output (the app by id or name)."""
    from thaw._output import print_log_line
    from thaw._sync import background_loop
    from thaw.client import current

    after = parse_since(since, time.time()) if since else None
    for line in background_loop().iterate(
        current().app_logs(app, follow=follow, function=function)
    ):
        if container and not line.container_id.startswith(container):
            continue
        if after is not None and line.at < after:
            continue
        print_log_line(line)


COMMANDS = [app_group]
