"""The web dashboard: ``GET /`` (the page) and ``GET /ui/{file}`` (its
scripts and styles), static files shipped in this package's ``static/``.

They need no token: the page holds nothing but code. It asks for a token,
keeps it in the tab's sessionStorage and sends it with every ``/v1`` call it
makes, so it sees exactly what the public API shows that token.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from thaw_gateway.errors import not_found

STATIC_DIR = Path(__file__).parent / "static"
# Served without a token (see auth.PUBLIC_PATHS and PUBLIC_PREFIXES).
PAGE_PATH = "/"
STATIC_PREFIX = "/ui/"
_FILE_RE = re.compile(r"^[a-z][a-z0-9_-]*\.(js|css|html|svg)$")
_TYPES = {
    "js": "text/javascript",
    "css": "text/css",
    "html": "text/html",
    "svg": "image/svg+xml",
}
# The page and its modules change with the gateway: browsers revalidate.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _serve(name: str) -> web.Response:
    match = _FILE_RE.match(name)
    path = STATIC_DIR / name
    if match is None or not path.is_file():
        raise not_found(f"no dashboard file {name!r}")
    return web.Response(
        body=path.read_bytes(), content_type=_TYPES[match.group(1)], charset="utf-8",
        headers=_HEADERS,
    )  # fmt: skip


async def index(request: web.Request) -> web.Response:
    return _serve("index.html")


async def static_file(request: web.Request) -> web.Response:
    return _serve(request.match_info["file"])
