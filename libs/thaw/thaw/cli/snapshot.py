"""`thaw snapshot list | rm`: the memory snapshots of deployed functions."""

from __future__ import annotations

import click
from thaw_core.schema import SnapshotCoverage, SnapshotInfo

from thaw.cli._common import ago, console, escape, expected_errors
from thaw.cli._listing import Column, json_option, print_list, styled

_STATE_STYLE = {
    "ready": "green",
    "creating": "cyan",
    "suspect": "red",
    "obsolete": "dim",
    "unhelpful": "yellow",
}
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


def _seconds(value: float) -> str:
    return f"{value:.2f}s" if value else "-"


SNAPSHOT_COLUMNS: list[Column[SnapshotInfo]] = [
    Column("snapshot", lambda s: s.snapshot_id, whole=True),
    Column("app", lambda s: s.app, whole=True),
    Column("function", lambda s: s.function),
    Column("version", lambda s: str(s.version)),
    Column("fingerprint", lambda s: s.fingerprint_id[:_SHORT_ID]),
    Column("size", lambda s: human_size(s.size) if s.size else "-"),
    Column("age", lambda s: ago(s.created_at)),
    # The cold start that made it, its last restore: what "unhelpful" weighs.
    Column("cold start", lambda s: _seconds(s.cold_start_s)),
    Column("last restore", lambda s: _seconds(s.restore_s)),
    Column("restores", _restores),
    Column("state", lambda s: styled(s.state, _STATE_STYLE)),
]


def why_not_used(s: SnapshotInfo) -> str | None:
    """Why a listed snapshot is not restored, in a sentence; None if it is."""
    if s.state == "unhelpful":
        return (
            f"{s.app}/{s.function} version {s.version}: snapshot {s.snapshot_id} is not used:"
            f" its restores ({s.restore_s:.2f}s) are no faster than a cold start"
            f" ({s.cold_start_s:.2f}s), so the function starts cold"
        )
    if s.state == "obsolete" and s.error and not s.size:
        return (
            f"{s.app}/{s.function} version {s.version}: making snapshot {s.snapshot_id}"
            f" failed: {s.error}"
        )
    return None


@snapshot_group.command("list")
@click.option("--app", help="Only this app's snapshots.")
@json_option
@expected_errors
def list_snapshots(app: str | None, as_json: bool) -> None:
    """List snapshots: function, fingerprint class, size, age, restores, state;
    then, per snapshot-enabled function, the fleet's classes they cover."""
    from thaw._sync import background_loop
    from thaw.client import current
    from thaw.snapshot_client import list_snapshots as fetch
    from thaw.snapshot_client import snapshot_coverage

    client = current()
    snapshots = background_loop().run(fetch(client, app))
    print_list(snapshots, SNAPSHOT_COLUMNS, as_json=as_json, empty="no snapshots")
    if not as_json:
        # On stderr: the table on stdout stays one snapshot a line for scripts.
        for s in snapshots:
            if (why := why_not_used(s)) is not None:
                click.echo(why, err=True)
        for c in background_loop().run(snapshot_coverage(client, app)):
            click.echo(_coverage_line(c), err=True)


def _coverage_line(c: SnapshotCoverage) -> str:
    cold = f"; {c.unhelpful} start cold (a snapshot does not help there)" if c.unhelpful else ""
    return (
        f"{c.app}/{c.function} version {c.version}: snapshots cover {c.covered} of"
        f" {c.present} fingerprint classes present{cold}"
    )


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
