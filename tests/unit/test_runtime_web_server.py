"""``@thaw.web_server`` inside the container, driven as the runtime drives
it (``build_app`` behind an ``Exchange``) against a real server on a port:
a request that finds the port not listening waits for it within the
startup_timeout and is answered; a server that never listens is a 503 that
names the port, not a bare 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from fixtures.ports import free_port
from thaw.runtime.web import proxy
from thaw.runtime.web.apps import build_app
from thaw.runtime.web.exchange import Asgi, Exchange
from thaw_core.container_protocol import WebSend, WebSent
from thaw_core.schema import WebHead


async def _hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that answers one request per connection, as http.server does."""
    try:
        await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return  # a probe of the port: connected, closed
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
    await writer.drain()
    writer.close()


def _head() -> WebHead:
    return WebHead(
        request_id="r1",
        method="GET",
        path="/",
        query=b"",
        headers=[("host", "example")],
        root_path="",
        scheme="http",
        client=None,
        server=None,
        body=b"",
        more_body=False,
        websocket=False,
    )


async def _serve(app: Callable[[], Asgi]) -> tuple[int, bytes, dict[str, str]]:
    """One request through ``app()``: status, body and headers the client gets."""
    parts: list[WebSend] = []
    exchange: Exchange

    def send_frame(frame: Any) -> None:
        assert isinstance(frame, WebSend)
        parts.append(frame)
        if frame.more:  # the agent delivered it: the app may send the next
            asyncio.get_running_loop().call_soon(exchange.answer, WebSent(request_id="r1"))

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await app()(scope, receive, send)

    exchange = Exchange(_head(), send_frame)
    await exchange.run(asgi)
    assert exchange.last is not None  # the last part rides with the input's Output
    parts.append(exchange.last)
    assert not parts[-1].more
    return parts[0].status, b"".join(p.body for p in parts), dict(parts[0].headers)


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def test_a_request_while_the_port_does_not_listen_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    server = await asyncio.start_server(_hello, "127.0.0.1", port)
    app = await build_app(
        {"kind": "server", "port": port, "startup_timeout": 60}, lambda: None, _call
    )
    # The server goes away (a restart, a server that binds in two steps) and
    # comes back only once the request found the port refusing.
    server.close()
    await server.wait_closed()
    refused = asyncio.Event()
    wait_for_port = proxy.wait_for_port

    async def waiting(port: int, deadline: float) -> bool:
        refused.set()
        return await wait_for_port(port, deadline)

    monkeypatch.setattr(proxy, "wait_for_port", waiting)
    request = asyncio.create_task(_serve(lambda: app))
    await refused.wait()
    server = await asyncio.start_server(_hello, "127.0.0.1", port)
    try:
        status, body, _ = await request
    finally:
        server.close()
    assert (status, body) == (200, b"hello")


async def test_a_server_that_never_listens_is_a_503_naming_its_port() -> None:
    port = free_port()
    option = {"kind": "server", "port": port, "startup_timeout": 0.2}
    building = asyncio.create_task(build_app(option, lambda: None, _call))
    await asyncio.wait([building])

    def app() -> Asgi:
        return building.result()  # raises what the build raised, as the runtime's does

    status, body, headers = await _serve(app)
    assert status == 503, body
    answer = json.loads(body)
    assert f"port {port}" in answer["error"]
    assert "startup_timeout" in answer["error"]
    assert headers["x-thaw-error-id"] == answer["error_id"]
