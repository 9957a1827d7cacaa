"""The gateway's snapshot endpoints from the caller's side (``thaw snapshot``).

Kept beside ``thaw.client`` rather than in it: functions over a ``Client``,
using its request and decoding helpers, so the shared client module does not
grow with every feature."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import msgspec
from thaw_core.schema import SnapshotInfo

from thaw.client import Client

_snapshot = msgspec.json.Decoder(SnapshotInfo)
_snapshots = msgspec.json.Decoder(list[SnapshotInfo])


async def list_snapshots(client: Client, app: str | None = None) -> list[SnapshotInfo]:
    query = f"?{urlencode({'app': app})}" if app else ""
    _, data = await client._json("GET", f"/v1/snapshots{query}")
    return client._decode(_snapshots, data, "a snapshot list")


async def remove_snapshot(client: Client, snapshot_id: str) -> SnapshotInfo:
    """Retire a snapshot: no longer restored; the snapshot service deletes its blob."""
    _, data = await client._json("DELETE", f"/v1/snapshots/{quote(snapshot_id, safe='')}")
    return client._decode(_snapshot, data, "a snapshot")
