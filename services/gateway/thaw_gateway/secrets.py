"""The secrets API: create, list and delete named secrets, and the values a
deploy stores for its own functions. Answers name secrets and their keys,
never their values."""

from __future__ import annotations

import logging

from aiohttp import web
from thaw_core.api import SecretCreate, SecretValues

from thaw_gateway.auth import TOKEN_NAME
from thaw_gateway.bodies import checked_name, path_name, read_body
from thaw_gateway.errors import bad_request, conflict, json_response, not_found
from thaw_gateway.secret_store import NAMED, SecretProblem, Stored
from thaw_gateway.state import gateway

log = logging.getLogger("thaw.gateway")


def _logged(what: str, request: web.Request, stored: Stored) -> None:
    log.info(
        what,
        extra={
            "secret": stored.name,
            "scope": stored.scope,
            "keys": stored.keys,
            "by": request.get(TOKEN_NAME, ""),
        },
    )


async def create_secret(request: web.Request) -> web.Response:
    body = await read_body(request, SecretCreate)
    name = checked_name("secret", body.name)
    try:
        stored = await gateway(request).secrets.put(NAMED, name, body.env, replace=body.force)
    except SecretProblem as e:
        raise bad_request(f"secret {name!r}: {e}") from None
    if stored is None:
        raise conflict(f"secret {name!r} exists; --force (force=true) replaces it")
    _logged("secret stored", request, stored)
    return json_response(stored.info(), 201)


async def list_secrets(request: web.Request) -> web.Response:
    stored = await gateway(request).secrets.list(NAMED)
    return json_response([s.info() for s in stored])


async def delete_secret(request: web.Request) -> web.Response:
    name = path_name(request, "secret")
    stored = await gateway(request).secrets.delete(NAMED, name)
    if stored is None:
        raise not_found(f"no secret named {name!r}")
    _logged("secret deleted", request, stored)
    return json_response(stored.info())


async def put_app_secret(request: web.Request) -> web.Response:
    app = path_name(request, "app")
    name = path_name(request, "secret")
    body = await read_body(request, SecretValues)
    try:
        stored = await gateway(request).secrets.put(app, name, body.env, replace=True)
    except SecretProblem as e:
        raise bad_request(f"secret values {name!r} of app {app!r}: {e}") from None
    assert stored is not None
    _logged("app secret stored", request, stored)
    return json_response(stored.info())
