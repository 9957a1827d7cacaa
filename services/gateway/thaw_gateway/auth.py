"""Bearer tokens: stored as the sha256 of the secret in ``tokens``, checked on
every request but ``/healthz``, and cached briefly so that the hot path pays no
database round trip.

Comparing hashes rather than secrets is what makes the check constant-time
where it matters: a lookup by hash can leak, through timing, how much of a
*hash* matched, which tells an attacker nothing about any secret that would
produce it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from thaw_core.api import TokenRequest, TokenResponse
from thaw_core.db import Database

from thaw_gateway.bodies import checked_name, read_body
from thaw_gateway.errors import ApiError, json_response
from thaw_gateway.state import gateway

log = logging.getLogger("thaw.gateway")

# Routes anyone may call: load balancers probe /healthz without credentials;
# the dashboard's page and files hold no data (its API calls carry a token).
PUBLIC_PATHS = frozenset({"/healthz", "/"})
PUBLIC_PREFIXES = ("/ui/",)
TOKEN_NAME: web.RequestKey[str] = web.RequestKey("thaw_gateway.token_name", str)
# RFC 6750's b64token, bounded: anything else is not a token we could have issued.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]{8,512}=*$")
# How long a checked token is trusted without asking Postgres again: the delay
# before a revocation takes effect.
TOKEN_CACHE_TTL_S = 5.0
_TOKEN_CACHE_MAX = 10_000
ADMIN_TOKEN_NAME = "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "thaw_" + secrets.token_urlsafe(32)


def unauthorized(message: str, *, invalid: bool = False) -> ApiError:
    challenge = 'Bearer realm="thaw"' + (', error="invalid_token"' if invalid else "")
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def bearer_token(header: str | None) -> str:
    if not header:
        raise unauthorized("missing Authorization header; send 'Authorization: Bearer <token>'")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized(
            "malformed Authorization header; expected 'Bearer <token>'", invalid=True
        )
    if not _TOKEN_RE.match(token):
        raise unauthorized("malformed bearer token", invalid=True)
    return token


class TokenStore:
    def __init__(self, db: Database, *, ttl_s: float = TOKEN_CACHE_TTL_S) -> None:
        self.db = db
        self.ttl_s = ttl_s
        # sha256 -> (token name, monotonic expiry). Only valid tokens are cached:
        # an unknown one costs a query, so it can never be cached into validity.
        self._valid: dict[str, tuple[str, float]] = {}

    async def authenticate(self, token: str) -> str | None:
        """The token's name, or None when it is unknown or revoked."""
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._valid.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        name = await self.db.fetchval(
            "SELECT name FROM tokens WHERE hash = $1 AND revoked_at IS NULL", digest
        )
        if name is None:
            self._valid.pop(digest, None)
            return None
        if len(self._valid) >= _TOKEN_CACHE_MAX:
            self._valid = {h: v for h, v in self._valid.items() if v[1] > now}
        self._valid[digest] = (name, now + self.ttl_s)
        return name

    async def create(self, name: str) -> str:
        """A new token; only its hash is kept, so this is the one time it is seen."""
        token = new_token()
        await self.db.execute(
            "INSERT INTO tokens (id, name, hash) VALUES ($1, $2, $3)",
            _token_id(),
            name,
            hash_token(token),
        )
        return token

    async def ensure(self, name: str, token: str) -> None:
        """Make ``token`` valid under ``name`` if it is not known yet (a revoked
        one stays revoked)."""
        await self.db.execute(
            "INSERT INTO tokens (id, name, hash) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING",
            _token_id(),
            name,
            hash_token(token),
        )

    async def bootstrap_admin(self, state_dir: Path, env: dict[str, str] | None = None) -> int:
        """Register the admin token(s) that ``thaw up`` or the deployment hands
        the gateway: ``<state_dir>/admin-token`` and ``THAW_ADMIN_TOKEN``."""
        e = os.environ if env is None else env
        found: list[str] = []
        path = state_dir / "admin-token"
        try:
            found.append(path.read_text().strip())
        except FileNotFoundError:
            pass
        if e.get("THAW_ADMIN_TOKEN"):
            found.append(e["THAW_ADMIN_TOKEN"].strip())
        count = 0
        for token in dict.fromkeys(found):
            if not _TOKEN_RE.match(token):
                log.error("ignoring a malformed admin token (from %s or THAW_ADMIN_TOKEN)", path)
                continue
            await self.ensure(ADMIN_TOKEN_NAME, token)
            count += 1
        return count


def _token_id() -> str:
    return "tk-" + uuid.uuid4().hex


def auth_middleware(tokens: TokenStore) -> Any:
    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        token = bearer_token(request.headers.get("Authorization"))
        name = await tokens.authenticate(token)
        if name is None:
            raise unauthorized("unknown or revoked token", invalid=True)
        request[TOKEN_NAME] = name
        return await handler(request)

    return authenticate


async def create_token(request: web.Request) -> web.Response:
    tokens = gateway(request).tokens
    body = await read_body(request, TokenRequest)
    checked_name("token", body.name)
    token = await tokens.create(body.name)
    log.info(
        "token created", extra={"token_name": body.name, "by": request.get(TOKEN_NAME, "")}
    )
    return json_response(TokenResponse(name=body.name, token=token), 201)
