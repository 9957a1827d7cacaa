"""``@thaw.web_server``: requests proxied to a port inside the container."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from thaw_core.schema import HOP_BY_HOP_HEADERS as HOP_BY_HOP

from thaw.runtime.web.exchange import Asgi

PORT_POLL_S = 0.05


async def wait_for_port(port: int, deadline: float) -> bool:
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(PORT_POLL_S)


def proxy_app(port: int) -> Asgi:
    import httpx

    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=None)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return

        first = await receive()

        async def rest() -> AsyncIterator[bytes]:
            message = first
            while True:
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return
                message = await receive()
                if message["type"] != "http.request":
                    return

        has_body = bool(first.get("body")) or bool(first.get("more_body"))

        root = scope.get("root_path", "")
        path = scope["path"].removeprefix(root)
        headers = [
            (k, v) for k, v in scope["headers"] if k.decode("latin-1").lower() not in HOP_BY_HOP
        ]
        request = client.build_request(
            scope["method"],
            httpx.URL(path=path or "/", query=scope["query_string"]),
            headers=headers,
            content=rest() if has_body else None,
        )
        response = await client.send(request, stream=True)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v)
                        for k, v in response.headers.raw
                        if k.decode("latin-1").lower() not in HOP_BY_HOP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return app
