"""``with_options`` variants (``thaw_core.variants``): a deployed function's
spec with a caller's overrides, stored as one more function of the app's
current version, so that the scheduler places its containers with those
resources and its inputs have a queue of their own.

Registering is idempotent (the overrides name the variant) and costs a
database write only the first time. Secrets and volumes reach data the
function's deployer chose, so adding them takes a deploy token.
"""

from __future__ import annotations

import msgspec
from aiohttp import web
from thaw_core.api import FunctionInfo
from thaw_core.contract import app_event_subject
from thaw_core.schema import AppEvent
from thaw_core.variants import FunctionOverrides, derive

from thaw_gateway.auth import PRINCIPAL, check_scope
from thaw_gateway.bodies import path_name, read_body
from thaw_gateway.deploy import ensure_consumer
from thaw_gateway.errors import bad_request, conflict, json_response
from thaw_gateway.secrets import check_deploy_secrets
from thaw_gateway.served import check_served
from thaw_gateway.state import gateway
from thaw_gateway.volume_mounts import check_deploy_volumes

# Each variant is a function with its own queue and containers; an invoke
# token may make them, so their number per function is bounded.
MAX_VARIANTS = 32

# Only while the version is still the app's current one: a redeploy racing
# this must not get a stale variant (the caller registers again on its 404).
_INSERT_SQL = """
INSERT INTO functions (app, name, version, spec)
SELECT a.name, $2, a.version, $4::jsonb FROM apps a
WHERE a.name = $1 AND a.version = $3 AND a.state = 'deployed'
ON CONFLICT (app, name, version) DO NOTHING
RETURNING name
"""


async def create_variant(request: web.Request) -> web.Response:
    gw = gateway(request)
    overrides = await read_body(request, FunctionOverrides)
    app, spec = await gw.catalog.resolve(path_name(request, "app"), path_name(request, "function"))
    if spec.variant_of is not None:
        raise bad_request(
            f"{spec.name!r} is itself a with_options variant of {spec.variant_of!r};"
            " give all the options to one with_options of the deployed function"
        )
    if overrides.empty:
        raise bad_request("a variant with no options given is the function itself")
    if overrides.secrets or overrides.volumes:
        check_scope(request[PRINCIPAL], "deploy", "with_options(secrets=, volumes=)")
    variant = derive(spec, overrides)
    known = app.functions.get(variant.name)
    if known is not None:
        if known != variant:
            raise conflict(f"function {variant.name!r} of app {app.name!r} is not this variant")
        return json_response(FunctionInfo(app=app.name, version=app.version, spec=known))
    made = sorted(n for n, f in app.functions.items() if f.variant_of == spec.name)
    if len(made) >= MAX_VARIANTS:
        raise conflict(
            f"{spec.name!r} of app {app.name!r} has {len(made)} with_options variants, the most"
            f" it may have in one deploy ({MAX_VARIANTS}); reuse one, or deploy again to clear"
            " them"
        )
    check_served([variant])
    await check_deploy_secrets(gw, app.name, [variant])
    await check_deploy_volumes(gw, [variant])
    await ensure_consumer(gw, app.name, variant.name)
    stored = await gw.db.fetchval(
        _INSERT_SQL, app.name, variant.name, app.version, msgspec.to_builtins(variant)
    )
    fresh = await gw.catalog.reload(app.name)
    if fresh is None or fresh.version != app.version or variant.name not in fresh.functions:
        raise conflict(f"app {app.name!r} changed while the variant was registered; try again")
    if stored is not None:
        # The scheduler reads the deployed functions again at once.
        await gw.bus.publish(
            app_event_subject(app.name),
            AppEvent(app=app.name, version=app.version, state="deployed"),
        )
    return json_response(
        FunctionInfo(app=app.name, version=app.version, spec=fresh.functions[variant.name])
    )
