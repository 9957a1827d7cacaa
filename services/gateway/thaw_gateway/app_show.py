"""One app read whole: ``GET /v1/apps/{app}`` (``thaw app show``: its
functions with their resources, scaling, schedule, endpoint and snapshot
coverage, and its schedules' fires) and ``GET /v1/apps/{app}/versions``
(``thaw app history``: every deploy)."""

from __future__ import annotations

from aiohttp import web
from thaw_core.api import AppDetail, AppHistory, AppVersion, FunctionDetail
from thaw_core.schema import FunctionSpec

from thaw_gateway.bodies import path_name
from thaw_gateway.catalog import DeployedApp
from thaw_gateway.cluster import node_class
from thaw_gateway.deploy import _app_info, _container_counts
from thaw_gateway.errors import json_response, not_found
from thaw_gateway.schedules import schedule_infos
from thaw_gateway.state import Gateway, gateway

_CONTAINERS_SQL = """
SELECT function, count(*) AS n FROM containers
WHERE app = $1 AND state IN ('starting', 'ready', 'draining')
GROUP BY function
"""

# Ready snapshots of the app's current version, per function and class.
_SNAPSHOTS_SQL = """
SELECT function, fingerprint_id, restores FROM snapshots
WHERE app = $1 AND version = $2 AND state = 'ready'
"""

_NODES_SQL = "SELECT inventory FROM nodes WHERE state = 'ready'"

_VERSIONS_SQL = """
SELECT v.version, v.bundle_sha256, extract(epoch FROM v.created_at)::float8 AS created_at,
       coalesce(array_agg(f.name ORDER BY f.name) FILTER (WHERE f.name IS NOT NULL), '{}')
           AS functions
FROM app_versions v
LEFT JOIN functions f ON f.app = v.app AND f.version = v.version
WHERE v.app = $1
GROUP BY v.version, v.bundle_sha256, v.created_at
ORDER BY v.version DESC
"""


async def _app(request: web.Request) -> DeployedApp:
    name = path_name(request, "app")
    app = await gateway(request).catalog.reload(name)
    if app is None:
        raise not_found(f"no app named {name!r}")
    return app


async def show_app(request: web.Request) -> web.Response:
    gw = gateway(request)
    app = await _app(request)
    counts = await _container_counts(gw, app.name)
    info = _app_info(app, counts, request)
    schedules = await schedule_infos(gw, app)
    return json_response(
        AppDetail(
            app=info,
            schedules=schedules,
            functions=await _functions(
                gw, app, info.web_urls, {s.function: s.schedule for s in schedules}
            ),
        )
    )


async def _functions(
    gw: Gateway, app: DeployedApp, urls: dict[str, str], schedules: dict[str, str]
) -> list[FunctionDetail]:
    containers = {r["function"]: r["n"] for r in await gw.db.fetch(_CONTAINERS_SQL, app.name)}
    covered: dict[str, set[str]] = {}
    restores: dict[str, int] = {}
    for r in await gw.db.fetch(_SNAPSHOTS_SQL, app.name, app.version):
        covered.setdefault(r["function"], set()).add(r["fingerprint_id"])
        restores[r["function"]] = restores.get(r["function"], 0) + r["restores"]
    fleet = sorted({c for r in await gw.db.fetch(_NODES_SQL) if (c := node_class(r["inventory"]))})
    return [
        _detail(
            spec,
            containers=containers.get(name, 0),
            schedule=schedules.get(name, ""),
            web_url=urls.get(name, ""),
            fleet=fleet if spec.enable_memory_snapshot else [],
            covered=sorted(covered.get(name, set())),
            restores=restores.get(name, 0),
        )
        for name, spec in sorted(app.functions.items())
    ]


def _detail(
    spec: FunctionSpec,
    *,
    containers: int,
    schedule: str,
    web_url: str,
    fleet: list[str],
    covered: list[str],
    restores: int,
) -> FunctionDetail:
    r, scale = spec.resources, spec.autoscale
    return FunctionDetail(
        name=spec.name,
        kind=spec.kind,
        methods=list(spec.methods),
        cpu=r.cpu,
        memory_mb=r.memory_mb,
        gpu=r.gpu or "",
        timeout_s=spec.timeout_s,
        max_inputs=spec.max_inputs,
        min_containers=scale.min_containers,
        max_containers=scale.max_containers,
        containers=containers,
        schedule=schedule,
        web_url=web_url,
        memory_snapshot=spec.enable_memory_snapshot,
        fleet_classes=fleet,
        snapshot_classes=covered,
        restores=restores,
    )


async def app_history(request: web.Request) -> web.Response:
    gw = gateway(request)
    app = await _app(request)
    rows = await gw.db.fetch(_VERSIONS_SQL, app.name)
    return json_response(
        AppHistory(
            app=app.name,
            app_id=app.app_id,
            versions=[
                AppVersion(
                    version=r["version"],
                    created_at=r["created_at"],
                    bundle_sha256=r["bundle_sha256"],
                    functions=list(r["functions"]),
                    current=r["version"] == app.version,
                )
                for r in rows
            ],
        )
    )
