"""``GET /v1/apps/{app}`` (``thaw app show``): one app, with its schedules."""

from __future__ import annotations

from aiohttp import web
from thaw_core.api import AppDetail

from thaw_gateway.bodies import path_name
from thaw_gateway.deploy import _app_info, _container_counts
from thaw_gateway.errors import json_response, not_found
from thaw_gateway.schedules import schedule_infos
from thaw_gateway.state import gateway


async def show_app(request: web.Request) -> web.Response:
    gw = gateway(request)
    name = path_name(request, "app")
    app = await gw.catalog.reload(name)
    if app is None:
        raise not_found(f"no app named {name!r}")
    counts = await _container_counts(gw, name)
    return json_response(
        AppDetail(app=_app_info(app, counts, request), schedules=await schedule_infos(gw, app))
    )
