"""`thaw app list | show | stop | logs`."""

from __future__ import annotations

from datetime import datetime

import click
from rich.table import Table

from thaw.cli._common import ago, console, escape, expected_errors


@click.group("app")
def app_group() -> None:
    """Deployed apps."""


@app_group.command("list")
@click.option("--all", "-a", "show_all", is_flag=True, help="Also list stopped apps.")
@expected_errors
def list_apps(show_all: bool) -> None:
    """List the apps, their versions and running containers."""
    from thaw._sync import background_loop
    from thaw.client import current

    apps = background_loop().run(current().apps())
    shown = [a for a in apps if show_all or a.state == "deployed"]
    table = Table(box=None, pad_edge=False)
    for column in ("app", "state", "version", "functions", "containers", "updated"):
        table.add_column(column)
    for a in sorted(shown, key=lambda a: a.name):
        state = "[green]deployed[/green]" if a.state == "deployed" else "[dim]stopped[/dim]"
        if a.ephemeral:
            state += " [yellow](ephemeral)[/yellow]"
        table.add_row(
            escape(a.name),
            state,
            str(a.version),
            escape(", ".join(a.functions)),
            str(a.containers),
            ago(a.updated_at or a.created_at),
        )
    if not shown:
        console().print(
            "[dim]no apps" + ("" if show_all else " deployed (--all shows stopped ones)") + "[/dim]"
        )
    else:
        console().print(table)


@app_group.command("show")
@click.argument("name")
@expected_errors
def show_app(name: str) -> None:
    """Show an app and its schedules: next and last fire, last run's status."""
    from thaw._sync import background_loop
    from thaw.client import current

    detail = background_loop().run(current().app(name))
    a = detail.app
    state = "[green]deployed[/green]" if a.state == "deployed" else "[dim]stopped[/dim]"
    if a.ephemeral:
        state += " [yellow](ephemeral)[/yellow]"
    console().print(
        f"[bold]{escape(a.name)}[/bold] {state}, version {a.version}, "
        f"{a.containers} container(s); functions: {escape(', '.join(a.functions))}"
    )
    if not detail.schedules:
        console().print("[dim]no scheduled functions[/dim]")
        return
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
    console().print(table)


def _at(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


@app_group.command("stop")
@click.argument("name")
@expected_errors
def stop_app(name: str) -> None:
    """Stop an app: its functions take no more calls and its containers go."""
    from thaw._sync import background_loop
    from thaw.client import current

    info = background_loop().run(current().stop_app(name))
    console().print(f"[bold]{escape(info.name)}[/bold] (version {info.version}) stopped")


@app_group.command("logs")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--function", help="Only this function's containers.")
@expected_errors
def app_logs(name: str, follow: bool, function: str | None) -> None:
    """Print an app's container output."""
    from thaw._output import print_log_line
    from thaw._sync import background_loop
    from thaw.client import current

    for line in background_loop().iterate(
        current().app_logs(name, follow=follow, function=function)
    ):
        print_log_line(line)


COMMANDS = [app_group]
