"""Code bundles, image files, deploys and stops.

A deploy is one SQL statement (new app version, its functions, the app's
current version), made only after the bundle is known to be stored and each
function's durable INVOKE consumer exists, so a deployed function can always
take inputs. Then the catalog is updated and an ``AppEvent`` tells the rest of
the platform (scheduler, other gateway replicas).
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable

import msgspec
from aiohttp import web
from thaw_core.api import (
    MAX_PAYLOAD_BYTES,
    AppInfo,
    DeployFailed,
    DeployFinished,
    DeployRequest,
    DeployResponse,
    FunctionInfo,
)
from thaw_core.blob import BlobIntegrityError
from thaw_core.contract import app_event_subject, bundle_key, file_key, invoke_consumer
from thaw_core.schema import AppEvent, FunctionSpec, check_name

from thaw_gateway.bodies import path_name, query_flag, read_body
from thaw_gateway.catalog import APP_ID_PREFIX, DeployedApp
from thaw_gateway.errors import (
    ApiError,
    bad_request,
    conflict,
    json_response,
    not_found,
    too_large,
)
from thaw_gateway.fleet import deploy_warnings
from thaw_gateway.images import BuildFailed, resolve_images
from thaw_gateway.schedules import check_schedules
from thaw_gateway.secrets import check_deploy_secrets
from thaw_gateway.served import check_served
from thaw_gateway.state import Gateway, gateway
from thaw_gateway.volume_mounts import check_deploy_volumes
from thaw_gateway.web_endpoints import web_urls

log = logging.getLogger("thaw.gateway")

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_UPLOAD_CHUNK = 1 << 20
_encoder = msgspec.json.Encoder()


class BundleStored(msgspec.Struct, kw_only=True):
    sha256: str
    size: int


def _sha256_param(request: web.Request, name: str = "sha256") -> str:
    sha = request.match_info[name]
    if not SHA256_RE.fullmatch(sha):
        raise bad_request(f"{sha!r} is not a sha256: expected 64 lowercase hex digits")
    return sha


# ------------------------------------------------- bundles and image files
# A code bundle is kept as ``bundles/<sha256>.zip``, a file an image adds
# (``Image.add_local_*``; the builder reads it from there) as ``files/<sha256>``.


async def head_bundle(request: web.Request) -> web.Response:
    return await _head_upload(request, bundle_key, "bundle")


async def put_bundle(request: web.Request) -> web.Response:
    return await _put_upload(request, bundle_key, "bundle")


async def head_file(request: web.Request) -> web.Response:
    return await _head_upload(request, file_key, "file")


async def put_file(request: web.Request) -> web.Response:
    return await _put_upload(request, file_key, "file")


async def _head_upload(request: web.Request, key: Callable[[str], str], what: str) -> web.Response:
    sha = _sha256_param(request)
    if not await gateway(request).blob.exists(key(sha)):
        raise not_found(f"no {what} {sha}")
    return web.Response(status=200)


async def _put_upload(
    request: web.Request, key: Callable[[str], str], what: str, param: str = "sha256"
) -> web.Response:
    """Store the body under ``key(sha256)``, streamed (never whole in memory)
    and refused unless it hashes to the sha256 in the path (its ``param``)."""
    sha = _sha256_param(request, param)
    return json_response(await _store_upload(request, key(sha), sha, what), 201)


async def _store_upload(
    request: web.Request,
    key: str,
    sha: str,
    what: str,
    *,
    limit: int = MAX_PAYLOAD_BYTES,
    limit_name: str = "",
) -> BundleStored:
    """Stream the body to ``key``; refused before anything is read when its
    Content-Length is over ``limit`` (``limit_name``: the setting that sets it)."""
    named = f" ({limit_name})" if limit_name else ""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(f"{what} of {request.content_length} bytes is over {limit}{named}")
    blob = gateway(request).blob
    size = 0

    async def body() -> AsyncIterator[bytes]:
        # The blob store hashes what it writes: no second pass here.
        nonlocal size
        async for chunk in request.content.iter_chunked(_UPLOAD_CHUNK):
            size += len(chunk)
            if size > limit:
                raise too_large(f"{what} is over {limit} bytes{named}")
            yield chunk

    try:
        info = await blob.put(key, body(), sha256=sha)
    except BlobIntegrityError as e:
        raise bad_request(
            f"the body's sha256 is {e.actual}, not {sha} as the path says; nothing was stored"
        ) from None
    return BundleStored(sha256=sha, size=info.size)


# ---------------------------------------------------------------- deploy

_DEPLOY_SQL = """
WITH app AS (
    INSERT INTO apps (id, name, state, version, ephemeral, updated_at)
    VALUES ($1, $2, 'deployed', 1, $4, now())
    ON CONFLICT (name) DO UPDATE
        SET state = 'deployed', version = apps.version + 1,
            ephemeral = EXCLUDED.ephemeral, updated_at = now()
    RETURNING id, name, version, created_at, updated_at
), ver AS (
    INSERT INTO app_versions (app, version, bundle_sha256)
    SELECT name, version, $3 FROM app
    RETURNING app, version
), fns AS (
    INSERT INTO functions (app, name, version, spec)
    SELECT ver.app, s ->> 'name', ver.version, s
    FROM ver, jsonb_array_elements($5::jsonb) AS s
)
SELECT id, version,
       extract(epoch FROM created_at)::float8 AS created_at,
       extract(epoch FROM updated_at)::float8 AS updated_at
FROM app
"""


def _check_deploy(body: DeployRequest) -> None:
    if not SHA256_RE.fullmatch(body.bundle_sha256):
        raise bad_request(
            f"bundle_sha256 {body.bundle_sha256!r} is not a sha256: expected 64 lowercase hex digits"
        )
    if not body.functions:
        raise bad_request("functions is empty: an app deploys at least one function")
    seen: set[str] = set()
    for i, spec in enumerate(body.functions):
        try:
            check_name("function", spec.name)
            for method in spec.methods:
                check_name("method", method)
        except ValueError as e:
            raise bad_request(f"functions[{i}]: {e}") from None
        if spec.name in seen:
            raise bad_request(f"functions[{i}]: function {spec.name!r} appears twice")
        seen.add(spec.name)
    check_schedules(body.functions)
    check_served(body.functions)


async def ensure_consumer(gw: Gateway, app: str, function: str) -> None:
    spec = invoke_consumer(app, function)
    # The durable joins names with "_", which names may contain: app "a_b" with
    # function "c" and app "a" with function "b_c" would share one consumer.
    state = await gw.bus.consumer_state(spec)
    if state is not None and state.filter_subject not in (None, spec.filter_subject):
        raise conflict(
            f"function {function!r} of app {app!r} would share the input queue {spec.durable!r}"
            f" with {state.filter_subject!r}; rename the app or the function"
        )
    await gw.bus.ensure_consumer(spec)


async def deploy_app(request: web.Request) -> web.StreamResponse:
    """Build what images need building, then record the deploy. With
    ``?progress=1`` the answer is NDJSON (``thaw_core.api.DeployEvent``): the
    builds' progress as it happens, then ``DeployFinished`` or ``DeployFailed``.
    Mistakes in the request itself are answered 4xx before anything streams."""
    gw = gateway(request)
    app = path_name(request, "app")
    body = await read_body(request, DeployRequest)
    _check_deploy(body)
    await check_deploy_secrets(gw, app, body.functions)
    await check_deploy_volumes(gw, body.functions)
    if not await gw.blob.exists(bundle_key(body.bundle_sha256)):
        raise bad_request(
            f"bundle {body.bundle_sha256} is not uploaded; PUT /v1/bundles/{body.bundle_sha256}"
            " first"
        )
    if body.ephemeral:
        await _refuse_replacing_a_deployed_app(gw, app)
    if not query_flag(request, "progress"):
        functions = await resolve_images(gw, app, body.functions, _nowhere)
        return json_response(await _record_deploy(request, app, body, functions))

    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)

    async def emit(event: msgspec.Struct) -> None:
        # A client that went away does not stop the deploy it asked for.
        with contextlib.suppress(ConnectionError):
            await resp.write(_encoder.encode(event) + b"\n")

    final: msgspec.Struct
    try:
        functions = await resolve_images(gw, app, body.functions, emit)
        final = DeployFinished(response=await _record_deploy(request, app, body, functions))
    except BuildFailed as e:
        final = DeployFailed(code=e.code, message=e.message, build=e.result)
    except ApiError as e:
        final = DeployFailed(code=e.code, message=e.message)
    except Exception as e:  # headers are sent: report in-band
        log.exception("deploy of %s failed", app)
        final = DeployFailed(code="internal", message=f"deploy failed: {type(e).__name__}: {e}")
    await emit(final)
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp


async def _nowhere(event: msgspec.Struct) -> None:
    pass


async def _refuse_replacing_a_deployed_app(gw: Gateway, app: str) -> None:
    """`thaw run` deploys an ephemeral app under the App's name and stops it
    afterwards; over a deployed app of that name it would take production down."""
    row = await gw.db.fetchrow("SELECT state, ephemeral FROM apps WHERE name = $1", app)
    if row is not None and row["state"] == "deployed" and not row["ephemeral"]:
        raise conflict(
            f"app {app!r} is deployed; an ephemeral run under the same name would replace"
            f" and then stop it. Give the App another name for the run, or stop it first"
            f" (thaw app stop {app})."
        )


async def _record_deploy(
    request: web.Request, app: str, body: DeployRequest, functions: list[FunctionSpec]
) -> DeployResponse:
    gw = gateway(request)
    for spec in functions:
        await ensure_consumer(gw, app, spec.name)
    row = await gw.db.fetchrow(
        _DEPLOY_SQL,
        APP_ID_PREFIX + uuid.uuid4().hex,
        app,
        body.bundle_sha256,
        body.ephemeral,
        functions,
    )
    assert row is not None
    deployed = DeployedApp(
        name=app,
        version=row["version"],
        state="deployed",
        functions={spec.name: spec for spec in functions},
        bundle_sha256=body.bundle_sha256,
        ephemeral=body.ephemeral,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        app_id=row["id"],
    )
    gw.catalog.put(deployed)
    await gw.bus.publish(
        app_event_subject(app), AppEvent(app=app, version=deployed.version, state="deployed")
    )
    log.info("app deployed", extra={"app": app, "version": deployed.version})
    return DeployResponse(
        app=app,
        version=deployed.version,
        functions=sorted(deployed.functions),
        web_urls=_urls(request, app, functions),
        app_id=deployed.app_id,
        warnings=await deploy_warnings(gw, functions) or msgspec.UNSET,
    )


async def stop_app(request: web.Request) -> web.Response:
    gw = gateway(request)
    app = (await gw.catalog.get_app(path_name(request, "app"))).name
    updated = await gw.db.fetchval(
        "UPDATE apps SET state = 'stopped', updated_at = now() WHERE name = $1 RETURNING name", app
    )
    if updated is None:
        raise not_found(f"no app named {app!r} is deployed")
    stopped = await gw.catalog.reload(app)
    assert stopped is not None
    await gw.bus.publish(
        app_event_subject(app), AppEvent(app=app, version=stopped.version, state="stopped")
    )
    counts = await _container_counts(gw, app)
    return json_response(_app_info(stopped, counts))


# ---------------------------------------------------------------- listing


def _app_info(
    app: DeployedApp, containers: dict[str, int], request: web.Request | None = None
) -> AppInfo:
    return AppInfo(
        app_id=app.app_id,
        name=app.name,
        state=app.state,
        version=app.version,
        functions=sorted(app.functions),
        ephemeral=app.ephemeral,
        created_at=app.created_at,
        updated_at=app.updated_at,
        containers=containers.get(app.name, 0),
        web_urls=_urls(request, app.name, app.functions.values()) if request else {},
    )


def _urls(request: web.Request, app: str, specs: Iterable[FunctionSpec]) -> dict[str, str]:
    domain = gateway(request).settings.web_domain
    return web_urls(request.scheme, request.host, domain, app, specs)


async def _container_counts(gw: Gateway, app: str | None = None) -> dict[str, int]:
    rows = await gw.db.fetch(
        "SELECT app, count(*) AS n FROM containers"
        " WHERE state IN ('starting', 'ready', 'draining') AND ($1::text IS NULL OR app = $1)"
        " GROUP BY app",
        app,
    )
    return {r["app"]: r["n"] for r in rows}


async def list_apps(request: web.Request) -> web.Response:
    gw = gateway(request)
    await gw.catalog.load_all()
    counts = await _container_counts(gw)
    return json_response([_app_info(app, counts, request) for app in gw.catalog.apps()])


async def get_function(request: web.Request) -> web.Response:
    gw = gateway(request)
    app, spec = await gw.catalog.resolve(path_name(request, "app"), path_name(request, "function"))
    url = _urls(request, app.name, [spec])
    return json_response(
        FunctionInfo(
            app=app.name, version=app.version, spec=spec, web_url=next(iter(url.values()), "")
        )
    )
