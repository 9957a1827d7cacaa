"""How every list command prints: one helper, so that all lists behave alike.

- ``--json``: the API's objects, in full, as one JSON array.
- stdout a terminal: a rich table; id columns are never cut, long values fold.
- stdout a pipe or a file: plain text, a header line then one row per line,
  columns padded with spaces, every value whole (never cut, never wrapped,
  newlines in a value turned into spaces, an empty value shown as ``-``), so
  that ``grep``, ``awk '{print $1}'`` and ``cut`` see one item per line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import click
import msgspec

from thaw._output import console

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# A cell: its text, or its text and the rich style it is shown in on a terminal.
Cell = str | tuple[str, str]

json_option: Callable[[F], F] = click.option(
    "--json", "as_json", is_flag=True, help="Print the list as JSON (all fields, in full)."
)


@dataclass(frozen=True)
class Column(Generic[T]):
    header: str
    value: Callable[[T], Cell]
    # Ids: shown whole on a terminal too, however narrow it is.
    whole: bool = False


def styled(value: str, styles: Mapping[str, str]) -> Cell:
    """``value`` in the style ``styles`` gives it (states: ready green, failed red...)."""
    style = styles.get(value, "")
    return (value, style) if style else value


def _text(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell[0]


def plain_value(cell: Cell) -> str:
    """A cell as one whitespace-free-at-the-ends field of a plain line."""
    text = " ".join(_text(cell).split())
    return text or "-"


def plain_lines(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> list[str]:
    table = [list(headers), *([plain_value(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    return [
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]


def _rich_table(columns: Sequence[Column[Any]], rows: Sequence[Sequence[Cell]]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for i, column in enumerate(columns):
        if column.whole:
            width = max([len(column.header), *(len(_text(row[i])) for row in rows)])
            table.add_column(column.header, no_wrap=True, min_width=width)
        else:
            table.add_column(column.header, overflow="fold")
    for row in rows:
        table.add_row(*(Text(c) if isinstance(c, str) else Text(c[0], style=c[1]) for c in row))
    return table


def to_terminal() -> bool:
    return sys.stdout.isatty()


def print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value), indent=2).decode() + "\n")
    sys.stdout.flush()


def print_list(
    items: Sequence[T],
    columns: Sequence[Column[T]],
    *,
    as_json: bool = False,
    empty: str = "nothing to list",
) -> None:
    """Print ``items`` as asked (see the module docstring). ``empty`` is shown,
    on a terminal only, when there is nothing: a pipe gets no lines at all."""
    if as_json:
        print_json(items)
        return
    rows = [[column.value(item) for column in columns] for item in items]
    if not to_terminal():
        if rows:
            sys.stdout.write("\n".join(plain_lines([c.header for c in columns], rows)) + "\n")
            sys.stdout.flush()
        return
    if not rows:
        console().print(f"[dim]{empty}[/dim]")
        return
    console().print(_rich_table(columns, rows))


__all__ = ["Cell", "Column", "json_option", "plain_lines", "print_json", "print_list", "styled"]
