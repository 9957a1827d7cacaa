"""`thaw snapshot list | rm`: the memory snapshots of deployed functions."""

from __future__ import annotations

import click
from rich.table import Table

from thaw.cli._common import ago, console, escape, expected_errors

_STATE_STYLE = {"ready": "green", "creating": "cyan", "suspect": "red", "obsolete": "dim"}
# How much of a fingerprint class id the table shows (as git shows commits).
_SHORT_ID = 12


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@click.group("snapshot")
def snapshot_group() -> None:
    """Memory snapshots of functions (enable_memory_snapshot=True)."""


@snapshot_group.command("list")
@click.option("--app", help="Only this app's snapshots.")
@expected_errors
def list_snapshots(app: str | None) -> None:
    """List snapshots: function, fingerprint class, size, age, restores, state."""
    from thaw._sync import background_loop
    from thaw.client import current
    from thaw.snapshot_client import list_snapshots as fetch

    snapshots = background_loop().run(fetch(current(), app))
    if not snapshots:
        console().print("[dim]no snapshots[/dim]")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("snapshot", "app", "function", "version", "fingerprint", "size", "age",
                   "restores", "state"):  # fmt: skip
        table.add_column(column)
    for s in snapshots:
        style = _STATE_STYLE.get(s.state, "")
        restores = str(s.restores) + (f" [red]({s.failures} failed)[/red]" if s.failures else "")
        table.add_row(
            s.snapshot_id,
            escape(s.app),
            escape(s.function),
            str(s.version),
            s.fingerprint_id[:_SHORT_ID],
            human_size(s.size) if s.size else "-",
            ago(s.created_at),
            restores,
            f"[{style}]{s.state}[/{style}]" if style else s.state,
        )
    console().print(table)


@snapshot_group.command("rm")
@click.argument("snapshot_id")
@expected_errors
def remove_snapshot(snapshot_id: str) -> None:
    """Retire a snapshot: it is no longer restored and its blob is deleted."""
    from thaw._sync import background_loop
    from thaw.client import current
    from thaw.snapshot_client import remove_snapshot as retire

    info = background_loop().run(retire(current(), snapshot_id))
    console().print(
        f"snapshot {escape(info.snapshot_id)} of {escape(info.app)}/{escape(info.function)} "
        "retired; its blob is deleted shortly"
    )


COMMANDS = [snapshot_group]
