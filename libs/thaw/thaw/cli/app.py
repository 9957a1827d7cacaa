"""`thaw app list | show | stop | logs`."""

from __future__ import annotations

import time
from datetime import datetime

import click
from rich.table import Table
from thaw_core.api import AppDetail, AppInfo, AppVersion, FunctionDetail

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


def _scale(f: FunctionDetail) -> str:
    top = "-" if f.max_containers is None else str(f.max_containers)
    return f"{f.min_containers}..{top}"


def _snapshots(f: FunctionDetail) -> Cell:
    """How many of the fleet's node classes a ready snapshot covers ('off': none made)."""
    if not f.memory_snapshot:
        return ("off", "dim")
    covered = len(set(f.snapshot_classes) & set(f.fleet_classes))
    full = covered and covered == len(f.fleet_classes)
    return (f"{covered}/{len(f.fleet_classes)}", "green" if full else "yellow")


# One word a cell, but the schedule's (last), so that awk's fields stay put.
FUNCTION_COLUMNS: list[Column[FunctionDetail]] = [
    Column("function", lambda f: f.name, whole=True),
    Column("kind", lambda f: f.kind),
    Column("methods", lambda f: ",".join(f.methods)),
    Column("cpu", lambda f: f"{f.cpu:g}"),
    Column("memory", lambda f: f"{f.memory_mb}MiB"),
    Column("gpu", lambda f: f.gpu),
    Column("timeout", lambda f: f"{f.timeout_s:g}s"),
    Column("inputs", lambda f: str(f.max_inputs)),
    Column("containers", lambda f: str(f.containers)),
    Column("scale", _scale),
    Column("endpoint", lambda f: f.web_url),
    Column("snapshots", _snapshots),
    Column("restores", lambda f: str(f.restores)),
    Column("schedule", lambda f: f.schedule),
]


@app_group.command("show")
@click.argument("app")
@json_option
@expected_errors
def show_app(app: str, as_json: bool) -> None:
    """Show an app (by id or name): its functions (resources, scaling, schedule,
    endpoint, snapshot coverage of the fleet's node classes), its schedules
    (next and last fire, last run's status) and its recent calls."""
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
    console().print("[bold]functions[/bold]")
    print_list(detail.functions, FUNCTION_COLUMNS, as_json=False, empty="no functions")
    named = {f.name for f in detail.functions}
    for name, url in sorted(a.web_urls.items()):
        if name not in named:  # an endpoint that is not a function's own row (a method's)
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


VERSION_COLUMNS: list[Column[AppVersion]] = [
    Column("version", lambda v: str(v.version)),
    Column("current", lambda v: ("yes", "green") if v.current else ""),
    Column("functions", lambda v: ",".join(v.functions)),
    Column("bundle", lambda v: v.bundle_sha256, whole=True),
    Column("deployed", lambda v: _at(v.created_at)),  # last: a time has spaces
]


@app_group.command("history")
@click.argument("app")
@json_option
@expected_errors
def app_history(app: str, as_json: bool) -> None:
    """List an app's deploys (by id or name), newest first: version, when, its functions."""
    from thaw._sync import background_loop
    from thaw.client import current

    history = background_loop().run(current().app_history(app))
    print_list(history.versions, VERSION_COLUMNS, as_json=as_json, empty="no deploys")


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
