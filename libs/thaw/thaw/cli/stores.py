"""`thaw dict list | items | get | clear | delete` and
`thaw queue list | peek | len | clear | delete`.

Keys given on the command line are strings; values print as Python
``repr``, one per line (``key<TAB>value`` for items), so they pipe well.
"""

from __future__ import annotations

import itertools

import click
from rich.table import Table

from thaw.cli._common import console, escape, expected_errors

COMMANDS: list[click.Command] = []


def _infos_table(infos: list, what: str) -> None:  # type: ignore[type-arg]
    if not infos:
        console().print(f"[dim]no {what}[/dim]")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("name", "entries" if what == "dicts" else "items", "bytes"):
        table.add_column(column)
    for i in infos:
        table.add_row(escape(i.name), str(i.count), str(i.bytes))
    console().print(table)


def _confirm(what: str, name: str, yes: bool) -> None:
    if not yes and not click.confirm(f"delete {what} {name!r} and everything in it?"):
        raise click.Abort()


# ---------------------------------------------------------------- dict


@click.group("dict")
def dict_group() -> None:
    """Dicts: named key-value stores shared by functions and local code."""


@dict_group.command("list")
@expected_errors
def dict_list() -> None:
    """List dicts and how many entries each holds."""
    from thaw.dict import list_dicts

    _infos_table(list_dicts(), "dicts")


@dict_group.command("items")
@click.argument("name")
@click.argument("n", type=int, default=20)
@click.option("--all", "everything", is_flag=True, help="Every entry, not only the first N.")
@expected_errors
def dict_items(name: str, n: int, everything: bool) -> None:
    """Print the first N entries (default 20) of dict NAME: key<TAB>value."""
    import thaw

    items = thaw.Dict.from_name(name).items()
    for k, v in items if everything else itertools.islice(items, n):
        click.echo(f"{k!r}\t{v!r}")


@dict_group.command("get")
@click.argument("name")
@click.argument("key")
@expected_errors
def dict_get(name: str, key: str) -> None:
    """Print the value of KEY (a string) in dict NAME."""
    import thaw

    missing = object()
    value = thaw.Dict.from_name(name).get(key, missing)
    if value is missing:
        raise click.ClickException(f"no key {key!r} in dict {name!r}")
    click.echo(repr(value))


@dict_group.command("clear")
@click.argument("name")
@expected_errors
def dict_clear(name: str) -> None:
    """Remove every entry of dict NAME."""
    import thaw

    thaw.Dict.from_name(name).clear()


@dict_group.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@expected_errors
def dict_delete(name: str, yes: bool) -> None:
    """Delete dict NAME and everything in it."""
    import thaw

    _confirm("dict", name, yes)
    thaw.Dict.delete(name)


# ---------------------------------------------------------------- queue


@click.group("queue")
def queue_group() -> None:
    """Queues: named FIFOs shared by functions and local code."""


@queue_group.command("list")
@expected_errors
def queue_list() -> None:
    """List queues and how many items each holds."""
    from thaw.queue import list_queues

    _infos_table(list_queues(), "queues")


@queue_group.command("peek")
@click.argument("name")
@click.argument("n", type=int, default=1)
@click.option("--partition", help="A partition of the queue (default: the default one).")
@expected_errors
def queue_peek(name: str, n: int, partition: str | None) -> None:
    """Print the first N items (default 1) of queue NAME, leaving them in it."""
    from thaw.queue import peek

    for v in peek(name, n, partition):
        click.echo(repr(v))


@queue_group.command("len")
@click.argument("name")
@click.option("--partition", help="A partition of the queue (default: the default one).")
@click.option("--total", is_flag=True, help="Items in every partition.")
@expected_errors
def queue_len(name: str, partition: str | None, total: bool) -> None:
    """Print how many items queue NAME holds."""
    import thaw

    click.echo(str(thaw.Queue.from_name(name).len(partition=partition, total=total)))


@queue_group.command("clear")
@click.argument("name")
@click.option("--partition", help="A partition of the queue (default: the default one).")
@click.option("--all", "everything", is_flag=True, help="Every partition.")
@expected_errors
def queue_clear(name: str, partition: str | None, everything: bool) -> None:
    """Remove the items of queue NAME (one partition, or --all)."""
    import thaw

    thaw.Queue.from_name(name).clear(partition=partition, all=everything)


@queue_group.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@expected_errors
def queue_delete(name: str, yes: bool) -> None:
    """Delete queue NAME and every item in it."""
    import thaw

    _confirm("queue", name, yes)
    thaw.Queue.delete(name)


COMMANDS += [dict_group, queue_group]
