"""Memory snapshots as the snapshot service cataloged them (the
``snapshots`` table, migration 0004): listing them, their coverage of the
fleet's fingerprint classes, and retiring one, which the snapshot service's
GC then deletes with its blob."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web
from thaw_core.schema import Fingerprint, SnapshotCoverage, SnapshotInfo
from thaw_core.snapshot_coverage import node_classes, uncovered

from thaw_gateway.bodies import path_id, query_name
from thaw_gateway.errors import json_response, not_found
from thaw_gateway.state import gateway

_COLUMNS = """snapshot_id, app, function, version, fingerprint, fingerprint_id, blob_key, size,
    sha256, extract(epoch FROM created_at)::float8 AS created_at, restores, failures, state,
    cold_start_s, restore_s, error"""

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


# The functions the scheduler makes snapshots of at deploy (``deploy_snapshots``).
_WANTED_SQL = """
SELECT d.app, d.function, d.version FROM deployed_functions d JOIN apps a ON a.name = d.app
WHERE NOT a.ephemeral AND coalesce((d.spec->>'enable_memory_snapshot')::boolean, false)
  AND ($1::text IS NULL OR d.app = $1)
ORDER BY d.app, d.function
"""
_READY_SQL = """
SELECT app, function, version, fingerprint, state FROM snapshots
WHERE state IN ('ready', 'unhelpful') AND ($1::text IS NULL OR app = $1)
"""
_NODES_SQL = "SELECT inventory->'fingerprint' AS fingerprint FROM nodes WHERE state = 'ready'"


def _fingerprint(value: Any) -> Fingerprint | None:
    try:
        return msgspec.convert(value, Fingerprint) if value else None
    except msgspec.ValidationError:
        return None  # a newer agent's fingerprint: left out rather than failing the list


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


async def snapshot_coverage(request: web.Request) -> web.Response:
    app = query_name(request, "app")
    db = gateway(request).db
    fleet = [fp for r in await db.fetch(_NODES_SQL) if (fp := _fingerprint(r["fingerprint"]))]
    classes = node_classes(fleet)
    # Per function version and state: the fingerprints its snapshots were taken on.
    taken: dict[tuple[str, str, int, str], list[Fingerprint]] = {}
    for r in await db.fetch(_READY_SQL, app):
        if (fp := _fingerprint(r["fingerprint"])) is not None:
            taken.setdefault((r["app"], r["function"], r["version"], r["state"]), []).append(fp)
    out = []
    for r in await db.fetch(_WANTED_SQL, app):
        key = (r["app"], r["function"], r["version"])
        missing = uncovered(taken.get((*key, "ready"), []), classes)
        # A class a ready snapshot covers is covered, whatever else serves it.
        left = {cls: classes[cls] for cls in missing}
        cold = len(left) - len(uncovered(taken.get((*key, "unhelpful"), []), left))
        out.append(
            SnapshotCoverage(
                app=r["app"],
                function=r["function"],
                version=r["version"],
                covered=len(classes) - len(missing),
                present=len(classes),
                unhelpful=cold,
            )
        )
    return json_response(out)
