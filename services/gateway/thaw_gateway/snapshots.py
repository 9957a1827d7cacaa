"""Memory snapshots as the snapshot service cataloged them (the
``snapshots`` table, migration 0004): listing them, and retiring one, which
the snapshot service's GC then deletes with its blob."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web
from thaw_core.schema import Fingerprint, SnapshotInfo

from thaw_gateway.bodies import path_id, query_name
from thaw_gateway.errors import json_response, not_found
from thaw_gateway.state import gateway

_COLUMNS = """snapshot_id, app, function, version, fingerprint, fingerprint_id, blob_key, size,
    sha256, extract(epoch FROM created_at)::float8 AS created_at, restores, failures, state"""

_LIST_SQL = f"""
SELECT {_COLUMNS} FROM snapshots
WHERE $1::text IS NULL OR app = $1
ORDER BY app, function, version DESC, created_at DESC
"""

# Obsolete rows are GC's: `rm` of one that is already going is a no-op, and a
# state this gateway does not know yet is retired like any other.
_RETIRE_SQL = f"""
UPDATE snapshots SET state = 'obsolete', updated_at = now()
WHERE snapshot_id = $1
RETURNING {_COLUMNS}
"""


def _info(row: Any) -> SnapshotInfo:
    # Not validated as a whole on purpose (as the container list): a state a
    # newer snapshot service writes is shown as it is rather than failing the list.
    fields = dict(row)
    fields["fingerprint"] = msgspec.convert(fields["fingerprint"], Fingerprint)
    return SnapshotInfo(**fields)


async def list_snapshots(request: web.Request) -> web.Response:
    app = query_name(request, "app")
    rows = await gateway(request).db.fetch(_LIST_SQL, app)
    return json_response([_info(row) for row in rows])


async def delete_snapshot(request: web.Request) -> web.Response:
    snapshot_id = path_id(request, "snapshot_id")
    row = await gateway(request).db.fetchrow(_RETIRE_SQL, snapshot_id)
    if row is None:
        raise not_found(f"no snapshot {snapshot_id!r}")
    return json_response(_info(row))
