"""The gateway's snapshot endpoints from the caller's side (``thaw snapshot``).

Kept beside ``thaw.client`` rather than in it: functions over a ``Client``'s
``json_request``, so the shared client module does not grow with every
feature."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from thaw_core.schema import SnapshotCoverage, SnapshotInfo

from thaw.client import Client


async def list_snapshots(client: Client, app: str | None = None) -> list[SnapshotInfo]:
    query = f"?{urlencode({'app': app})}" if app else ""
    return await client.json_request(
        "GET", f"/v1/snapshots{query}", list[SnapshotInfo], "a snapshot list"
    )


async def snapshot_coverage(client: Client, app: str | None = None) -> list[SnapshotCoverage]:
    """Per snapshot-enabled deployed function: the fleet's classes its snapshots restore on."""
    query = f"?{urlencode({'app': app})}" if app else ""
    return await client.json_request(
        "GET", f"/v1/snapshot-coverage{query}", list[SnapshotCoverage], "a snapshot coverage"
    )


async def remove_snapshot(client: Client, snapshot_id: str) -> SnapshotInfo:
    """Retire a snapshot: no longer restored; the snapshot service deletes its blob."""
    path = f"/v1/snapshots/{quote(snapshot_id, safe='')}"
    return await client.json_request("DELETE", path, SnapshotInfo, "a snapshot")
