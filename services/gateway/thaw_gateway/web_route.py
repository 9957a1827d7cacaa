"""The router's resource for requests to web endpoints, by Host header or
``/web/`` path (``web_endpoints``).

Why a resource when ``web_requests.web_middleware`` serves them: a request
that no route matches makes aiohttp build an ``HTTPNotFound`` (a whole
response) and wrap every middleware around it anew, on each request; that
was 5-7% of the gateway's CPU on a web endpoint's requests. Matched here,
aiohttp caches the middleware chain and builds nothing, and the match says
where the request goes so that the middleware need not work it out again.
Its handler is never reached: the middleware answers first, ahead of auth.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from yarl import URL

from thaw_gateway import web_endpoints

# What the match carries (``target``'s fields), by name: match infos are str -> str.
_FIELDS = ("app", "label", "root_path", "path")


def target(request: web.Request, domain: str) -> tuple[str, str, str, str] | None:
    """(app, label, root_path, path) of a web request; None for the API."""
    by_host = web_endpoints.split_host(request.host, domain)
    if by_host is not None:
        return *by_host, "", request.raw_path.split("?", 1)[0]
    by_path = web_endpoints.split_path(request.raw_path.split("?", 1)[0])
    if by_path is None:
        return None
    app, label, rest = by_path
    root = f"{web_endpoints.PATH_PREFIX}{app}/{label}"
    return app, label, root, root + (rest or "/")


def matched(request: web.Request) -> tuple[str, str, str, str] | None:
    """The target this resource matched the request to, if it did."""
    info = request.match_info
    if not isinstance(info.route.resource, WebResource):
        return None
    return info["app"], info["label"], info["root_path"], info["path"]


async def _unreached(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


class WebResource(web.Resource):
    """Every method of every path that ``target`` finds an endpoint for."""

    def __init__(self, domain: str) -> None:
        super().__init__(name="web_endpoint")
        self._domain = domain
        self.add_route("*", _unreached)

    @property
    def canonical(self) -> str:
        # The router looks a resource up by the part of this before its first
        # "{": "/", the last place every path is looked for, after the API's
        # own routes. Also the route's name in trace spans.
        return "/{web_endpoint}"

    async def resolve(self, request: web.Request) -> Any:
        found = target(request, self._domain)
        if found is None:
            return None, set()
        info = web.UrlMappingMatchInfo(dict(zip(_FIELDS, found, strict=True)), self._route)
        return info, self._allowed_methods

    def _match(self, path: str) -> dict[str, str] | None:
        raise AssertionError("resolve matches by the whole request")  # pragma: no cover

    @property
    def _route(self) -> web.ResourceRoute:
        route = self._any_route
        assert route is not None
        return route

    def raw_match(self, path: str) -> bool:
        return False

    def get_info(self) -> dict[str, Any]:
        return {"domain": self._domain}

    def url_for(self, **parts: str) -> URL:
        return URL.build(path=f"{web_endpoints.PATH_PREFIX}{parts['app']}/{parts['label']}")

    def add_prefix(self, prefix: str) -> None:
        raise NotImplementedError("the web endpoints' resource is the gateway's own")

    def __repr__(self) -> str:
        return "<WebResource>"
