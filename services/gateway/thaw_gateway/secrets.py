"""The secrets API: create, list and delete named secrets, and the values a
deploy stores for its own functions; the deploy check; and the values of a
container's secrets for the agent starting or restoring it, on
``contract.SECRETS_FETCH``. HTTP answers, logs and errors name secrets and
their keys, never their values."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
from aiohttp import web
from cryptography.exceptions import InvalidTag
from thaw_core import contract, secrets_grant
from thaw_core.api import SecretCreate, SecretValues
from thaw_core.bus import Bus, Msg, Subscription
from thaw_core.schema import FunctionSpec, SecretsReply, SecretsRequest, decoder, encode

from thaw_gateway.auth import TOKEN_NAME
from thaw_gateway.bodies import checked_name, path_name, read_body
from thaw_gateway.errors import bad_request, conflict, json_response, not_found
from thaw_gateway.secret_store import ENV_KEY_RE, NAMED, SecretProblem, SecretStore, Stored
from thaw_gateway.secretbox import SecretKeyError
from thaw_gateway.state import Gateway, gateway

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


async def check_deploy_secrets(gw: Gateway, app: str, functions: Sequence[FunctionSpec]) -> None:
    """Refuse a deploy whose functions name a secret that does not exist or
    lacks one of its ``required_keys``, naming each."""
    problems: list[str] = []
    for spec in functions:
        for ref in spec.secrets:
            checked_name("secret", ref.name)
            bad = [k for k in ref.required_keys if not ENV_KEY_RE.match(k)]
            if bad:
                problems.append(f"{spec.name}: required_keys {bad!r} are not variable names")
        problems += [f"{spec.name}: {p}" for p in await gw.secrets.problems(app, spec.secrets)]
    if problems:
        raise bad_request("cannot deploy: " + "; ".join(problems))


_fetch = decoder(SecretsRequest)


async def serve_secrets(bus: Bus, store: SecretStore, grant_key: bytes) -> Subscription:
    """Answer agents' and the builder's ``SecretsRequest``s (one gateway of
    the queue group each), each only as far as its grant goes
    (``thaw_core.secrets_grant``)."""

    async def on_fetch(msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            req = _fetch.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            reply = SecretsReply(error=f"not a valid SecretsRequest: {e}")
        else:
            if why := secrets_grant.refusal(grant_key, req, msg.reply):
                log.warning(
                    "secrets fetch refused",
                    extra={"app": req.app, "function": req.function, "reason": why},
                )
                reply = SecretsReply(error=f"secrets of {req.app}/{req.function} refused: {why}")
            else:
                reply = await _values_for(store, req)
        await msg.respond(encode(reply))

    return await bus.serve(contract.SECRETS_FETCH, on_fetch, queue=contract.SECRETS_FETCH)


async def _values_for(store: SecretStore, req: SecretsRequest) -> SecretsReply:
    where = f"secrets of {req.app}/{req.function}"
    try:
        env = await store.environment(req.app, req.secrets)
    except SecretProblem as e:
        return SecretsReply(error=f"{where}: {e}")
    except SecretKeyError as e:
        return SecretsReply(error=f"{where}: {e}")
    except InvalidTag:
        return SecretsReply(error=f"{where}: a secret does not decrypt under its key")
    log.debug(
        "secrets fetched",
        extra={"app": req.app, "function": req.function, "secrets": [r.name for r in req.secrets]},
    )
    return SecretsReply(env=env)
