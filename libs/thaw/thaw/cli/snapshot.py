"""`thaw snapshot list | rm`: the memory snapshots of deployed functions."""

from __future__ import annotations

import click
from thaw_core.schema import SnapshotInfo

from thaw.cli._common import ago, console, escape, expected_errors
from thaw.cli._listing import Column, json_option, print_list, styled

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


def _restores(s: SnapshotInfo) -> str:
    return str(s.restores) + (f" ({s.failures} failed)" if s.failures else "")


SNAPSHOT_COLUMNS: list[Column[SnapshotInfo]] = [
    Column("snapshot", lambda s: s.snapshot_id, whole=True),
    Column("app", lambda s: s.app, whole=True),
    Column("function", lambda s: s.function),
    Column("version", lambda s: str(s.version)),
    Column("fingerprint", lambda s: s.fingerprint_id[:_SHORT_ID]),
    Column("size", lambda s: human_size(s.size) if s.size else "-"),
    Column("age", lambda s: ago(s.created_at)),
    Column("restores", _restores),
    Column("state", lambda s: styled(s.state, _STATE_STYLE)),
]


@snapshot_group.command("list")
@click.option("--app", help="Only this app's snapshots.")
@json_option
@expected_errors
def list_snapshots(app: str | None, as_json: bool) -> None:
    """List snapshots: function, fingerprint class, size, age, restores, state."""
    from thaw._sync import background_loop
    from thaw.client import current
    from thaw.snapshot_client import list_snapshots as fetch

    snapshots = background_loop().run(fetch(current(), app))
    print_list(snapshots, SNAPSHOT_COLUMNS, as_json=as_json, empty="no snapshots")


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
