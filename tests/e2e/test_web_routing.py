"""Web endpoints on a gateway with a web domain (``THAW_WEB_DOMAIN``) and a
short start timeout: the host-name form routed by the Host header, the path
form with its ``root_path``, ``requires_proxy_auth``, an unknown endpoint,
and a container that does not start in time."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from fixtures.platform import E2E_APPS, Platform
from fixtures.web import past_cold_start

DOMAIN = "thaw.test"
START_TIMEOUT_S = 20
PROXY_TOKEN_HEADER = "X-Thaw-Token"


@pytest.fixture(scope="module")
async def web_platform(platform_factory: Callable[..., Any]) -> Platform:
    p: Platform = await platform_factory(
        ("web-a",),
        env={"THAW_WEB_DOMAIN": DOMAIN, "THAW_WEB_START_TIMEOUT_S": str(START_TIMEOUT_S)},
    )
    return p


@pytest.fixture(scope="module")
def urls(web_platform: Platform) -> dict[str, str]:
    out = web_platform.cli("deploy", str(E2E_APPS / "web_routing.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    return dict(re.findall(r"^web (\S+): (\S+)$", out.stdout, re.MULTILINE))


def get(
    p: Platform, url: str, *, host: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` on the gateway itself, with ``host`` as the Host header:
    as a client does whose wildcard DNS points at the gateway."""
    parts = urllib.parse.urlsplit(url)
    target = p.gateway_url + parts.path + (f"?{parts.query}" if parts.query else "")
    req = urllib.request.Request(target, headers=headers or {})
    if host is not None:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=180) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_warm(p: Platform, url: str, **kw: Any) -> tuple[int, bytes]:
    status, _, body = past_cold_start(lambda: get(p, url, **kw))
    return status, body


def test_deploy_prints_host_name_urls(urls: dict[str, str], web_platform: Platform) -> None:
    port = web_platform.gateway_port
    assert urls["routes"] == f"http://web-routing--routes.{DOMAIN}:{port}"
    assert urls["guarded"] == f"http://web-routing--guarded.{DOMAIN}:{port}"
    assert urls["NeverReady.ping"] == f"http://web-routing--neverready-ping.{DOMAIN}:{port}"


def test_host_form_is_routed_by_the_host_header(
    urls: dict[str, str], web_platform: Platform
) -> None:
    host = urllib.parse.urlsplit(urls["routes"]).netloc
    status, body = get_warm(web_platform, "/where", host=host)
    assert status == 200, body.decode() + web_platform.logs()
    # Served at the root of its own host name: absolute paths work as they are.
    assert json.loads(body) == {"root_path": "", "url": f"http://{host}/where"}


def test_path_form_sets_root_path(urls: dict[str, str], web_platform: Platform) -> None:
    root = "/web/web-routing/routes"
    status, body = get_warm(web_platform, root + "/where")
    assert status == 200, body.decode() + web_platform.logs()
    assert json.loads(body) == {
        "root_path": root,
        "url": f"{web_platform.gateway_url}{root}/where",
    }


def test_unknown_endpoints_are_404(urls: dict[str, str], web_platform: Platform) -> None:
    port = web_platform.gateway_port
    for host in (f"web-routing--nothing.{DOMAIN}:{port}", f"no-such-app--routes.{DOMAIN}:{port}"):
        status, _, body = get(web_platform, "/where", host=host)
        assert status == 404, body
        assert json.loads(body)["error"]["code"] == "not_found"
    status, _, _ = get(web_platform, "/web/web-routing/nothing/where")
    assert status == 404


def test_requires_proxy_auth_wants_a_thaw_token(
    urls: dict[str, str], web_platform: Platform
) -> None:
    host = urllib.parse.urlsplit(urls["guarded"]).netloc
    for headers in ({}, {PROXY_TOKEN_HEADER: "not-a-token"}):
        status, _, body = get(web_platform, "/?name=ada", host=host, headers=headers)
        assert status == 401, body
        assert PROXY_TOKEN_HEADER.lower() in body.decode()
    good = {PROXY_TOKEN_HEADER: web_platform.token}
    status, body = get_warm(web_platform, "/?name=ada", host=host, headers=good)
    assert status == 200, body.decode() + web_platform.logs()
    assert json.loads(body) == {"hello": "ada"}
    # Any token that may invoke this app will do; others are refused, naming why.
    for scope, app, want in [
        ("invoke", "web-routing", 200),
        ("invoke", "another-app", 403),
        ("read", None, 403),
    ]:
        token = _token(web_platform, scope, app)
        status, _, body = get(web_platform, "/?name=ada", host=host,
                              headers={PROXY_TOKEN_HEADER: token})  # fmt: skip
        assert status == want, (scope, app, body)
        if want == 403:
            assert json.loads(body)["error"]["code"] == "forbidden"


def _token(p: Platform, scope: str, app: str | None) -> str:
    only = ["--app", app] if app else []
    out = p.cli("token", "create", f"web-{scope}", "--scope", scope, *only)
    assert out.returncode == 0, out.stdout + out.stderr
    return next(w for w in out.stdout.split() if w.startswith("thaw_"))


async def test_a_container_that_does_not_start_in_time_is_a_503(
    urls: dict[str, str], web_platform: Platform
) -> None:
    host = urllib.parse.urlsplit(urls["NeverReady.ping"]).netloc
    status, _, body = await asyncio.to_thread(get, web_platform, "/", host=host)
    assert status == 503, body
    error = json.loads(body)["error"]
    assert error["code"] == "unavailable"
    assert f"started within {START_TIMEOUT_S} s" in error["message"]
    assert "NeverReady" in error["message"]
