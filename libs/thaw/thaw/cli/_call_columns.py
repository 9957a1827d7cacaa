"""The columns of a list of calls (`thaw call list`, `thaw app show`)."""

from __future__ import annotations

from thaw_core.api import CallSummary

from thaw.cli._common import ago
from thaw.cli._listing import Cell, Column, styled

_STATUS_STYLES = {
    "success": "green", "pending": "cyan", "cancelled": "dim",
    "failure": "red", "timeout": "red", "terminated": "red",
}  # fmt: skip


def _status(c: CallSummary) -> Cell:
    return styled(c.status, _STATUS_STYLES)


def _duration(c: CallSummary) -> str:
    return f"{c.duration_s:.3f}s" if c.duration_s else "-"


CALL_COLUMNS: list[Column[CallSummary]] = [
    Column("call", lambda c: c.call_id, whole=True),
    Column("app", lambda c: c.app, whole=True),
    Column("function", lambda c: c.function),
    Column("status", _status),
    Column("made", lambda c: ago(c.created_at)),
    Column("duration", _duration),
    Column("container", lambda c: c.container_id or "-", whole=True),
    Column("error", lambda c: c.error.splitlines()[0] if c.error else ""),
]
