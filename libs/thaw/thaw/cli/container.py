"""`thaw container list | stop | exec`."""

from __future__ import annotations

import sys

import click
from thaw_core.api import ContainerInfo

from thaw.cli._common import ago, console, escape, expected_errors
from thaw.cli._listing import Cell, Column, json_option, print_list, styled

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


def _note(c: ContainerInfo) -> Cell:
    if c.error:
        return (c.error, "red")
    return "restored from snapshot" if c.restored else ""


CONTAINER_COLUMNS: list[Column[ContainerInfo]] = [
    Column("container", lambda c: c.container_id, whole=True),
    Column("app", lambda c: c.app, whole=True),
    Column("function", lambda c: c.function),
    Column("version", lambda c: str(c.version)),
    Column("node", lambda c: c.node_id),
    Column("state", lambda c: styled(c.state, _STATE_STYLE)),
    Column("inputs", lambda c: f"{c.inflight}/{c.max_inputs}"),
    Column("started", lambda c: ago(c.started_at)),
    Column("note", _note),
]


@container_group.command("list")
@click.option("--app", help="Only this app's containers.")
@json_option
@expected_errors
def list_containers(app: str | None, as_json: bool) -> None:
    """List containers: their function, node, state, load, age, restored from a snapshot or not."""
    from thaw._sync import background_loop
    from thaw.client import current

    containers = background_loop().run(current().containers(app))
    shown = sorted(containers, key=lambda c: (c.app, c.function, c.started_at))
    print_list(shown, CONTAINER_COLUMNS, as_json=as_json, empty="no containers")


@container_group.command("stop")
@click.argument("container_id")
@expected_errors
def stop_container(container_id: str) -> None:
    """Stop a container; the inputs it was running are retried elsewhere."""
    from thaw._sync import background_loop
    from thaw.client import current

    background_loop().run(current().stop_container(container_id))
    console().print(f"container {escape(container_id)} stopping")


@container_group.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("-t", "--tty", "tty_wanted", is_flag=True, help="Give the command a terminal.")
@click.argument("container_id")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@expected_errors
def exec_in_container(container_id: str, command: tuple[str, ...], tty_wanted: bool) -> None:
    """Run COMMAND in a running container (a function's or a sandbox, ids from
    `thaw container list`): stdin, stdout and stderr are this terminal's, the
    exit code is the command's. Put `--` before a command that has options."""
    from thaw._sync import background_loop
    from thaw.cli.container_exec import run_exec

    args = list(command)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        raise click.UsageError("a command to run is needed after the container id")
    code = background_loop().run(run_exec(container_id, args, tty_wanted=tty_wanted))
    sys.exit(code)


COMMANDS = [container_group]
