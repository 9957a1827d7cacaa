"""Bearer tokens and their scopes.

A token is stored as the sha256 of its secret in ``tokens``, with its scope
(``api.Scope``), the apps an invoke token is limited to, and when it expires.
Every route of the table (``routes.ROUTES``) names the scope it needs; one
middleware checks it on every request: 401 without a token or with one that
is unknown, revoked or expired; 403, naming the scope needed, with a valid
token that does not hold it (or an invoke token of other apps).

Checked tokens are cached briefly so that the hot path pays no database round
trip (their expiry is checked on every request, cached or not). Comparing
hashes rather than secrets is what makes the check constant-time where it
matters: a lookup by hash can leak, through timing, how much of a *hash*
matched, which tells an attacker nothing about any secret that would produce it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from thaw_core.api import GRANTS, Scope
from thaw_core.db import Database

from thaw_gateway.errors import ApiError, not_found

log = logging.getLogger("thaw.gateway")

# Paths anyone may call although no route of the table matched them (the
# table's own public routes say so themselves).
PUBLIC_PATHS = frozenset({"/healthz", "/"})
PUBLIC_PREFIXES = ("/ui/",)
TOKEN_NAME: web.RequestKey[str] = web.RequestKey("thaw_gateway.token_name", str)
# The aiohttp route -> the scopes any one of which it takes (None: public),
# set by routes.mount().
ROUTE_SCOPES: web.AppKey[dict[Any, frozenset[Scope] | None]] = web.AppKey(
    "thaw_gateway.route_scopes"
)
# RFC 6750's b64token, bounded: anything else is not a token we could have issued.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]{8,512}=*$")
# How long a checked token is trusted without asking Postgres again: the delay
# before a revocation takes effect.
TOKEN_CACHE_TTL_S = 5.0
_TOKEN_CACHE_MAX = 10_000
ADMIN_TOKEN_NAME = "admin"


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for, and what it may do."""

    id: str
    name: str
    scope: Scope
    # An invoke token's apps (names); None: every app.
    apps: frozenset[str] | None = None
    expires_at: float | None = None  # epoch seconds

    def holds(self, scope: Scope) -> bool:
        return scope in GRANTS[self.scope]

    def may_invoke(self, app: str) -> bool:
        return self.holds("invoke") and (self.apps is None or app in self.apps)

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or time.time())


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("thaw_gateway.principal", Principal)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "thaw_" + secrets.token_urlsafe(32)


def _challenge(error: str | None, message: str, scope: str = "") -> dict[str, str]:
    """RFC 6750's WWW-Authenticate, the message in it too: the one place a
    HEAD request's client can read why it was refused."""
    text = message.encode("ascii", "replace").decode().replace("\\", "/").replace('"', "'")
    parts = ['realm="thaw"']
    parts += [f'error="{error}"'] if error else []
    parts += [f'scope="{scope}"'] if scope else []
    parts.append(f'error_description="{text}"')
    return {"WWW-Authenticate": "Bearer " + ", ".join(parts)}


def unauthorized(message: str, *, invalid: bool = False) -> ApiError:
    headers = _challenge("invalid_token" if invalid else None, message)
    return ApiError(401, "unauthorized", message, headers=headers)


def forbidden(message: str, scope: str = "") -> ApiError:
    headers = _challenge("insufficient_scope", message, scope)
    return ApiError(403, "forbidden", message, headers=headers)


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


_SELECT = """
SELECT id, name, scope, apps, extract(epoch FROM expires_at)::float8 AS expires_at
FROM tokens WHERE hash = $1 AND revoked_at IS NULL
"""


class TokenStore:
    def __init__(self, db: Database, *, ttl_s: float = TOKEN_CACHE_TTL_S) -> None:
        self.db = db
        self.ttl_s = ttl_s
        # sha256 -> (principal, monotonic expiry). Only valid tokens are cached:
        # an unknown one costs a query, so it can never be cached into validity.
        self._valid: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, token: str) -> Principal | None:
        """Who the token speaks for; None when it is unknown or revoked.
        (An expired one is answered: the caller says so, see ``expired``.)"""
        digest = hash_token(token)
        now = time.monotonic()
        hit = self._valid.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        row = await self.db.fetchrow(_SELECT, digest)
        if row is None:
            self._valid.pop(digest, None)
            return None
        apps = row["apps"]
        principal = Principal(
            id=row["id"],
            name=row["name"],
            scope=row["scope"],
            apps=frozenset(apps) if apps is not None else None,
            expires_at=row["expires_at"],
        )
        if len(self._valid) >= _TOKEN_CACHE_MAX:
            self._valid = {h: v for h, v in self._valid.items() if v[1] > now}
        self._valid[digest] = (principal, now + self.ttl_s)
        return principal

    async def create(
        self,
        name: str,
        scope: Scope,
        *,
        apps: Iterable[str] | None = None,
        expires_in_s: float | None = None,
    ) -> tuple[str, dict[str, Any]]:
        """A new token and its row; only its hash is kept, so this is the one
        time it is seen."""
        token = new_token()
        row = await self.db.fetchrow(
            "INSERT INTO tokens (id, name, hash, scope, apps, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))"
            " RETURNING id, extract(epoch FROM expires_at)::float8 AS expires_at",
            _token_id(),
            name,
            hash_token(token),
            scope,
            sorted(set(apps)) if apps is not None else None,
            expires_in_s,
        )
        assert row is not None
        return token, dict(row)

    async def ensure(self, name: str, token: str) -> None:
        """Make ``token`` a valid admin token under ``name`` if it is not known
        yet (a revoked one stays revoked)."""
        await self.db.execute(
            "INSERT INTO tokens (id, name, hash, scope) VALUES ($1, $2, $3, 'admin')"
            " ON CONFLICT (hash) DO NOTHING",
            _token_id(),
            name,
            hash_token(token),
        )

    async def list(self) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT id, name, scope, apps,"
            " extract(epoch FROM created_at)::float8 AS created_at,"
            " extract(epoch FROM expires_at)::float8 AS expires_at,"
            " extract(epoch FROM revoked_at)::float8 AS revoked_at"
            " FROM tokens ORDER BY created_at, id"
        )
        return [dict(r) for r in rows]

    async def revoke(self, token_id: str) -> dict[str, Any] | None:
        """Revoke a token by id (a revoked one stays as it was): its row, or
        None when there is no such token. Takes effect here at once and on
        other replicas within ``TOKEN_CACHE_TTL_S``."""
        row = await self.db.fetchrow(
            "UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1"
            " RETURNING hash",
            token_id,
        )
        if row is None:
            return None
        self._valid.pop(row["hash"], None)
        return next((t for t in await self.list() if t["id"] == token_id), None)

    async def bootstrap_admin(self, state_dir: Path, env: Mapping[str, str] | None = None) -> int:
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


async def principal_of(tokens: TokenStore, token: str) -> Principal:
    """The valid token's principal, else the 401 to answer."""
    principal = await tokens.authenticate(token)
    if principal is None:
        raise unauthorized("unknown or revoked token", invalid=True)
    if principal.expired():
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(principal.expires_at))
        raise unauthorized(f"token {principal.name!r} expired at {when}", invalid=True)
    return principal


def check_scope(principal: Principal, needed: Scope | frozenset[Scope], what: str) -> None:
    """403 unless the token holds ``needed`` (one of them, for a set)."""
    wanted = frozenset((needed,)) if isinstance(needed, str) else needed
    if not any(principal.holds(s) for s in wanted):
        named = " or ".join(f"scope {s!r}" for s in sorted(wanted))
        holders = sorted(s for s, held in GRANTS.items() if held & wanted)
        raise forbidden(
            f"{what} needs a token of {named} (held by {', '.join(holders)} tokens); "
            f"token {principal.name!r} has scope {principal.scope!r}",
            " ".join(sorted(wanted)),
        )


def check_app(principal: Principal, app: str) -> None:
    """An invoke token of other apps may not touch ``app``."""
    if principal.apps is not None and app not in principal.apps:
        raise forbidden(
            f"token {principal.name!r} may invoke only the apps {sorted(principal.apps)}, "
            f"not {app!r}"
        )


def auth_middleware(tokens: TokenStore) -> Any:
    @web.middleware
    async def authenticate(request: web.Request, handler: Any) -> web.StreamResponse:
        route = request.match_info.route
        scopes = request.app[ROUTE_SCOPES]
        if route in scopes:
            needed = scopes[route]
            if needed is None:  # a public route of the table
                return await handler(request)
        elif request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
            return await handler(request)
        else:
            needed = None  # no such route: any valid token learns it is a 404
        principal = await principal_of(tokens, bearer_token(request.headers.get("Authorization")))
        if needed is not None:
            check_scope(principal, needed, f"{request.method} {route.resource.canonical}")
            if "app" in request.match_info:
                check_app(principal, request.match_info["app"])
        request[PRINCIPAL] = principal
        request[TOKEN_NAME] = principal.name
        return await handler(request)

    return authenticate


AppsOf = Callable[[list[str]], Awaitable[dict[str, str]]]


async def check_calls(request: web.Request, call_ids: list[str], app_of: AppsOf) -> None:
    """A call id names no app: an invoke token of some apps reaches the calls
    of those apps only. ``app_of`` maps the known ids to their apps; an
    unknown call is a 404 to such a token (it may not learn of others')."""
    principal = request.get(PRINCIPAL)
    if principal is None or principal.apps is None:
        return
    apps = await app_of(call_ids)
    for call_id in call_ids:
        if call_id not in apps:
            raise not_found(f"no call {call_id!r} of the apps this token may invoke")
        check_app(principal, apps[call_id])
