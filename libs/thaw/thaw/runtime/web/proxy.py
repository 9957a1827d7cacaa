"""``@thaw.web_server``: requests proxied to a port inside the container."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from thaw_core.schema import HOP_BY_HOP_HEADERS as HOP_BY_HOP

from thaw.runtime.web.exchange import Asgi, Refused

PORT_POLL_S = 0.05

if TYPE_CHECKING:
    import httpx


async def wait_for_port(port: int, deadline: float) -> bool:
    """Whether the port listens by ``deadline``. Each try is bounded by it
    too: a connect whose SYN is dropped hangs for minutes, not fails."""
    while True:
        try:
            opening = asyncio.open_connection("127.0.0.1", port)
            timeout_s = max(deadline - time.monotonic(), PORT_POLL_S)
            _, writer = await asyncio.wait_for(opening, timeout_s)
            writer.close()
            return True
        except OSError:  # TimeoutError (wait_for's) is one
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(PORT_POLL_S)


def not_listening(port: int, timeout_s: float, since: str) -> Refused:
    return Refused(
        503,
        f"@thaw.web_server: nothing listens on port {port} in the container"
        f" within its startup_timeout of {timeout_s:g} s {since}",
    )


def no_answer(port: int, e: Exception) -> Refused:
    return Refused(502, f"@thaw.web_server: the server on port {port} did not answer: {e!r}")


async def _response(
    client: httpx.AsyncClient, request: httpx.Request, port: int, timeout_s: float
) -> httpx.Response:
    """The server's answer to ``request``. A refused connection (the server
    not listening yet, or again) is tried again once the port listens,
    within ``timeout_s``: nothing of the request went out on it."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            if not await wait_for_port(port, deadline):
                raise not_listening(port, timeout_s, "of this request") from e
        except httpx.TransportError as e:
            raise no_answer(port, e) from e


def proxy_app(port: int, startup_timeout_s: float) -> Asgi:
    import httpx

    # No limit on a response (a stream may run for hours), but a connect
    # that hangs is a server not listening.
    timeout = httpx.Timeout(None, connect=startup_timeout_s)
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout)

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
        response = await _response(client, request, port, startup_timeout_s)
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
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.TransportError as e:
                raise no_answer(port, e) from e
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    return app
