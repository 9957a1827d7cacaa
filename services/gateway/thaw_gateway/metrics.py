"""``GET /metrics``: this gateway process's Prometheus metrics (calls issued,
and whatever else ``thaw_core.metrics`` holds here), behind the API token
like every other route; Prometheus sends it with ``authorization:``."""

from __future__ import annotations

from aiohttp import web
from thaw_core.metrics import exposition


async def get_metrics(request: web.Request) -> web.Response:
    body, content_type = exposition()
    # aiohttp wants the charset apart from the media type.
    media, _, params = content_type.partition(";")
    charset = params.partition("charset=")[2].strip() or None
    return web.Response(body=body, content_type=media.strip(), charset=charset)
