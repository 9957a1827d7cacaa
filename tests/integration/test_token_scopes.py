"""Scoped API tokens against the real gateway (NATS, Postgres, S3). The
route table is walked, so a route added later is covered without a word
here: without a token it answers 401, with a token whose scope does not
hold the route's it answers 403 naming the scope needed, and with one that
does it gets past auth."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fixtures.gateway import (
    Gateway,
    deploy,
    fill_path,
    gateway,  # noqa: F401 - a fixture
    settings,  # noqa: F401 - a fixture
    spec,
    unique,
)
from fixtures.wait import eventually
from thaw_core.api import GRANTS, SCOPES
from thaw_gateway.routes import ROUTES

pytestmark = pytest.mark.timeout(300)


async def make_token(gw: Gateway, scope: str, **kw: Any) -> dict[str, Any]:
    status, body = await gw.call(
        "POST", "/v1/tokens", json={"name": unique(scope), "scope": scope, **kw}
    )
    assert status == 201, body
    assert body["scope"] == scope and body["token"].startswith("thaw_")
    return body


async def answer(
    gw: Gateway, method: str, path: str, token: str | None, **kw: Any
) -> tuple[int, dict[str, Any] | None]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=60)
    async with gw.http.request(
        method, gw.url + path, headers=headers, timeout=timeout, **kw
    ) as r:
        data = await r.read() if method != "HEAD" else b""
        try:
            return r.status, (await r.json()) if data and r.content_type.endswith("json") else None
        except ValueError:
            return r.status, None


async def test_every_route_checks_its_scope(gateway: Gateway) -> None:
    tokens = {scope: (await make_token(gateway, scope))["token"] for scope in SCOPES}
    protected = [r for r in ROUTES if not r.public]
    assert set().union(*(r.scopes for r in protected)) == set(SCOPES)
    for route in protected:
        path = fill_path(route.path)
        what = f"{route.method} {route.path}"
        status, body = await answer(gateway, route.method, path, None)
        assert status == 401, (what, status, body)
        for scope, token in tokens.items():
            status, body = await answer(gateway, route.method, path, token)
            if route.scopes & GRANTS[scope]:
                assert status not in (401, 403), (what, scope, status, body)
                continue
            assert status == 403, (what, scope, status, body)
            if route.method == "HEAD":  # no body: the challenge says why
                headers = {"Authorization": f"Bearer {token}"}
                async with gateway.http.head(gateway.url + path, headers=headers) as r:
                    challenge = r.headers["WWW-Authenticate"]
                assert 'error="insufficient_scope"' in challenge, challenge
                assert f"error_description=\"{what.split()[0]}" in challenge, challenge
                assert f'scope="{" ".join(sorted(route.scopes))}"' in challenge, challenge
            else:
                assert body is not None and body["error"]["code"] == "forbidden"
                message = body["error"]["message"]
                assert all(f"scope {s!r}" in message for s in route.scopes), message
                assert f"has scope {scope!r}" in message, message


async def test_an_invoke_token_calls_its_apps_only(gateway: Gateway) -> None:
    mine, other = unique("mine"), unique("other")
    for app in (mine, other):
        await deploy(gateway, app, spec("f"))
    tok = (await make_token(gateway, "invoke", apps=[mine]))["token"]

    status, _ = await answer(gateway, "GET", f"/v1/functions/{mine}/f", tok)
    assert status == 200
    status, accepted = await answer(gateway, "POST", f"/v1/functions/{mine}/f/calls", tok, json={})
    assert status == 202 and accepted
    status, _ = await answer(gateway, "GET", f"/v1/calls/{accepted['call_id']}", tok)
    assert status == 202

    for method, path in [
        ("GET", f"/v1/functions/{other}/f"),
        ("POST", f"/v1/functions/{other}/f/calls"),
        ("POST", f"/v1/functions/{other}/f/calls:batch"),
    ]:
        status, body = await answer(gateway, method, path, tok, json={"items": [[]]})
        assert status == 403, (path, status, body)
        assert body and other in body["error"]["message"] and mine in body["error"]["message"]

    # A call of the other app (made by the admin): its id is no way in.
    _, theirs = await gateway.call("POST", f"/v1/functions/{other}/f/calls", json={})
    cid = theirs["call_id"]
    for method, path, kw in [
        ("GET", f"/v1/calls/{cid}", {}),
        ("POST", f"/v1/calls/{cid}/cancel", {}),
        ("POST", "/v1/calls:stream", {"json": {"call_ids": [cid]}}),
    ]:
        status, body = await answer(gateway, method, path, tok, **kw)
        assert status == 403, (path, status, body)
    # Neither the deploy nor the read routes of its own app.
    status, _ = await answer(gateway, "POST", f"/v1/apps/{mine}/stop", tok)
    assert status == 403
    status, _ = await answer(gateway, "GET", "/v1/apps", tok)
    assert status == 403


async def test_expiry_revocation_and_listing(gateway: Gateway) -> None:
    reader = await make_token(gateway, "read")
    brief = await make_token(gateway, "read", expires_in_s=0.5)
    assert brief["expires_at"] and brief["expires_at"] <= time.time() + 60

    async def expired() -> str | None:
        status, body = await answer(gateway, "GET", "/v1/apps", brief["token"])
        return body["error"]["message"] if status == 401 and body else None

    assert "expired" in await eventually(expired, timeout_s=30, what="the token expiring")

    status, listed = await gateway.call("GET", "/v1/tokens")
    assert status == 200
    by_id = {t["id"]: t for t in listed}
    assert by_id[reader["id"]]["state"] == "active" and by_id[brief["id"]]["state"] == "expired"
    assert by_id[reader["id"]]["scope"] == "read"
    text = str(listed)
    assert reader["token"] not in text and brief["token"] not in text and "hash" not in text

    status, revoked = await gateway.call("POST", f"/v1/tokens/{reader['id']}/revoke")
    assert status == 200 and revoked["state"] == "revoked"
    status, body = await answer(gateway, "GET", "/v1/apps", reader["token"])
    assert status == 401 and body and "revoked" in body["error"]["message"]
    status, _ = await gateway.call("POST", "/v1/tokens/tk-nope/revoke")
    assert status == 404

    # Options that a scope does not carry out are refused, not ignored.
    for bad in (
        {"scope": "read", "apps": ["a"]},
        {"scope": "invoke", "apps": []},
        {"scope": "invoke", "expires_in_s": 0},
        {"scope": "root"},
    ):
        status, body = await gateway.call("POST", "/v1/tokens", json={"name": "bad", **bad})
        assert status == 400, (bad, body)


async def test_tokens_made_before_scopes_become_admin(make_db: Any, tmp_path: Path) -> None:
    db = await make_db(migrated=False)
    before = tmp_path / "before-scopes"
    before.mkdir()
    for f in resources.files("thaw_core.migrations").iterdir():
        if f.name.endswith(".sql") and f.name < "0008":
            with resources.as_file(f) as src:
                shutil.copy(src, before / f.name)
    await db.migrate(before)
    await db.execute("INSERT INTO tokens (id, name, hash) VALUES ('tk-old', 'old', 'h')")
    await db.migrate()
    assert await db.fetchval("SELECT scope FROM tokens WHERE id = 'tk-old'") == "admin"


async def thaw_cli(gw: Gateway, *args: str) -> tuple[int, str]:
    env = {**os.environ, "THAW_GATEWAY_URL": gw.url, "THAW_TOKEN": gw.token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "thaw.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode()


async def test_the_cli_creates_lists_and_revokes(gateway: Gateway) -> None:
    name, app = unique("ci"), unique("app")
    rc, out = await thaw_cli(
        gateway, "token", "create", name, "--scope", "invoke", "--app", app, "--expires", "7d"
    )
    assert rc == 0, out
    token = next(w for w in out.split() if w.startswith("thaw_"))
    status, _ = await answer(gateway, "GET", f"/v1/functions/{app}/f", token)
    assert status == 404  # past auth: that app has no such function

    rc, out = await thaw_cli(gateway, "token", "list", "--json")
    assert rc == 0, out
    assert token not in out
    mine = next(t for t in json.loads(out) if t["name"] == name)
    assert (mine["scope"], mine["apps"], mine["state"]) == ("invoke", [app], "active")
    assert 6.9 * 86400 < mine["expires_at"] - time.time() <= 7 * 86400

    rc, out = await thaw_cli(gateway, "token", "revoke", mine["id"])
    assert rc == 0 and "revoked" in out, out
    status, _ = await answer(gateway, "GET", f"/v1/functions/{app}/f", token)
    assert status == 401
    rc, out = await thaw_cli(gateway, "token", "list")
    assert rc == 0 and name in out and "revoked" in out, out
