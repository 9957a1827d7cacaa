"""`thaw container list | stop`."""

from __future__ import annotations

import click
from rich.table import Table

from thaw.cli._common import ago, console, escape, expected_errors

_STATE_STYLE = {
    "ready": "green",
    "starting": "cyan",
    "draining": "yellow",
    "failed": "red",
    "stopped": "dim",
}


@click.group("container")
def container_group() -> None:
    """Running containers."""


@container_group.command("list")
@click.option("--app", help="Only this app's containers.")
@expected_errors
def list_containers(app: str | None) -> None:
    """List containers: their function, state, load and age."""
    from thaw._sync import background_loop
    from thaw.client import current

    containers = background_loop().run(current().containers(app))
    if not containers:
        console().print("[dim]no containers[/dim]")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("container", "app", "function", "version", "state", "inputs", "started", "note"):
        table.add_column(column)
    for c in sorted(containers, key=lambda c: (c.app, c.function, c.started_at)):
        style = _STATE_STYLE.get(c.state, "")
        note = "restored from snapshot" if c.restored else ""
        if c.error:
            note = f"[red]{escape(c.error)}[/red]"
        table.add_row(
            c.container_id,
            escape(c.app),
            escape(c.function),
            str(c.version),
            f"[{style}]{c.state}[/{style}]" if style else c.state,
            f"{c.inflight}/{c.max_inputs}",
            ago(c.started_at),
            note,
        )
    console().print(table)


@container_group.command("stop")
@click.argument("container_id")
@expected_errors
def stop_container(container_id: str) -> None:
    """Stop a container; the inputs it was running are retried elsewhere."""
    from thaw._sync import background_loop
    from thaw.client import current

    background_loop().run(current().stop_container(container_id))
    console().print(f"container {escape(container_id)} stopping")


COMMANDS = [container_group]
