"""``/v1/tokens``: create (shown once), list (never a value), revoke. Admin
tokens only (the route table says so)."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from aiohttp import web
from thaw_core.api import TokenInfo, TokenRequest, TokenResponse

from thaw_gateway.auth import TOKEN_NAME
from thaw_gateway.bodies import checked_name, read_body
from thaw_gateway.errors import bad_request, json_response, not_found
from thaw_gateway.state import gateway

log = logging.getLogger("thaw.gateway")

# A token that outlives this is better made without an expiry, on purpose.
MAX_EXPIRES_IN_S = 10 * 366 * 86400.0


def _info(row: dict[str, Any], now: float) -> TokenInfo:
    state = (
        "revoked"
        if row["revoked_at"] is not None
        else "expired"
        if row["expires_at"] is not None and row["expires_at"] <= now
        else "active"
    )
    return msgspec.convert({**row, "state": state}, TokenInfo)


async def create_token(request: web.Request) -> web.Response:
    tokens = gateway(request).tokens
    body = await read_body(request, TokenRequest)
    checked_name("token", body.name)
    if body.apps is not None:
        if body.scope != "invoke":
            raise bad_request(
                f"apps limits an invoke token to some apps; a {body.scope!r} token covers every app"
            )
        if not body.apps:
            raise bad_request("apps: name at least one app (or leave it out for every app)")
        for app in body.apps:
            checked_name("app", app)
    if body.expires_in_s is not None and not 0 < body.expires_in_s <= MAX_EXPIRES_IN_S:
        raise bad_request(
            f"expires_in_s must be more than 0 and at most {MAX_EXPIRES_IN_S:.0f} (ten years), "
            f"got {body.expires_in_s:g}"
        )
    token, row = await tokens.create(
        body.name, body.scope, apps=body.apps, expires_in_s=body.expires_in_s
    )
    log.info(
        "token created",
        extra={
            "token_name": body.name,
            "token_id": row["id"],
            "scope": body.scope,
            "by": request.get(TOKEN_NAME, ""),
        },
    )
    return json_response(
        TokenResponse(
            name=body.name,
            token=token,
            id=row["id"],
            scope=body.scope,
            apps=sorted(set(body.apps)) if body.apps is not None else None,
            expires_at=row["expires_at"],
        ),
        201,
    )


async def list_tokens(request: web.Request) -> web.Response:
    now = time.time()
    return json_response([_info(r, now) for r in await gateway(request).tokens.list()])


async def revoke_token(request: web.Request) -> web.Response:
    token_id = request.match_info["token_id"]
    row = await gateway(request).tokens.revoke(token_id)
    if row is None:
        raise not_found(f"no token {token_id!r}")
    log.info("token revoked", extra={"token_id": token_id, "by": request.get(TOKEN_NAME, "")})
    return json_response(_info(row, time.time()))
