"""``Function.update_autoscaler``: a deployed function's autoscaling settings
changed in place, in its current version's stored spec (which the scheduler
reads), and the scheduler woken by an app event to act on them now."""

from __future__ import annotations

import msgspec
from aiohttp import web
from thaw_core.api import AutoscalerUpdate, FunctionInfo
from thaw_core.contract import app_event_subject
from thaw_core.schema import AppEvent, Autoscale

from thaw_gateway.bodies import path_name, read_body
from thaw_gateway.errors import bad_request, json_response
from thaw_gateway.state import gateway

_UPDATE_SQL = """
UPDATE functions SET spec = jsonb_set(spec, '{autoscale}', $4::jsonb)
WHERE app = $1 AND name = $2 AND version = $3
"""


def updated(current: Autoscale, body: AutoscalerUpdate) -> Autoscale:
    """``current`` with what ``body`` sets; refused when it makes no sense."""
    new = msgspec.structs.replace(
        current,
        **{
            k: v
            for k, v in (
                ("min_containers", body.min_containers),
                ("max_containers", body.max_containers),
                ("buffer_containers", body.buffer_containers),
                ("scaledown_window_s", body.scaledown_window),
            )
            if v is not None
        },
    )
    if new.min_containers < 0 or new.buffer_containers < 0 or new.scaledown_window_s < 0:
        raise bad_request("autoscaler settings must not be negative")
    if new.max_containers is not None and new.max_containers < new.min_containers:
        raise bad_request(
            f"max_containers ({new.max_containers}) is below min_containers ({new.min_containers})"
        )
    return new


async def update_autoscaler(request: web.Request) -> web.Response:
    gw = gateway(request)
    body = await read_body(request, AutoscalerUpdate, empty_ok=True)
    app, spec = await gw.catalog.resolve(path_name(request, "app"), path_name(request, "function"))
    autoscale = updated(spec.autoscale, body)
    await gw.db.execute(
        _UPDATE_SQL,
        app.name,
        spec.name,
        app.version,
        msgspec.to_builtins(autoscale),
    )
    fresh = await gw.catalog.reload(app.name)
    assert fresh is not None
    await gw.bus.publish(
        app_event_subject(app.name), AppEvent(app=app.name, version=fresh.version, state="deployed")
    )
    return json_response(
        FunctionInfo(app=fresh.name, version=fresh.version, spec=fresh.functions[spec.name])
    )
