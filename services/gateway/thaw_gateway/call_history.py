"""``GET /v1/calls``: the recent calls of the platform (or of one app or
function), newest first, each with its outcome once it has one.

The ``calls`` table says which calls were made and when; the RESULTS stream
says how each ended. Calls not yet written to the table are written first,
so a call made a moment ago is listed.
"""

from __future__ import annotations

from aiohttp import web
from asyncpg import Record
from thaw_core.api import CallList, CallSummary
from thaw_core.schema import Result

from thaw_gateway.bodies import query_count, query_name
from thaw_gateway.errors import json_response
from thaw_gateway.state import gateway

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

_RECENT_SQL = """
SELECT call_id, app, function, map_id, idx, result_key,
       extract(epoch FROM created_at)::float8 AS created_at
FROM calls
WHERE ($1::text IS NULL OR app = $1) AND ($2::text IS NULL OR function = $2)
ORDER BY created_at DESC, call_id
LIMIT $3
"""


async def list_calls(request: web.Request) -> web.Response:
    gw = gateway(request)
    app = query_name(request, "app")
    if app is not None:
        app = (await gw.catalog.get_app(app)).name  # an id names the app too
    function = query_name(request, "function")
    limit = query_count(request, "limit", default=DEFAULT_LIMIT, cap=MAX_LIMIT)
    await gw.calls.flush()
    rows = await gw.db.fetch(_RECENT_SQL, app, function, limit)
    outcomes = await gw.results.stored_many({row["call_id"]: row["result_key"] for row in rows})
    calls = [_summary(row, outcomes.get(row["call_id"])) for row in rows]
    return json_response(CallList(calls=calls))


def _summary(row: Record, outcome: Result | None) -> CallSummary:
    call = CallSummary(
        call_id=row["call_id"],
        app=row["app"],
        function=row["function"],
        created_at=row["created_at"],
        map_id=row["map_id"],
        index=row["idx"],
    )
    if outcome is not None:
        call.status = outcome.status
        call.started_at = outcome.started_at
        call.finished_at = outcome.finished_at
        if outcome.started_at:
            call.duration_s = max(0.0, outcome.finished_at - outcome.started_at)
        call.container_id = outcome.container_id
        call.attempts = outcome.attempts
        call.error = outcome.error
        call.traceback = outcome.traceback
    return call
