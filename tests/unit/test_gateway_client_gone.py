"""A client that leaves mid-stream, against the gateway's error middleware
on a real aiohttp server: not an error (no "Error handling request" with a
traceback in the gateway's log, no 500 attempted), and the server goes on
serving."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web
from fixtures.ports import free_port
from thaw_gateway.errors import error_middleware


async def test_a_client_leaving_mid_stream_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            while True:  # until the client's leaving breaks a write
                await response.write(b"x" * 65536)
                await asyncio.sleep(0)
        finally:
            gone.set()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="still here")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/stream", stream)
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    caplog.set_level(logging.DEBUG)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/stream") as r:
                assert r.status == 200
                await r.content.readexactly(1024)
                r.connection.transport.abort()  # type: ignore[union-attr]
            await gone.wait()
            async with session.get(f"http://127.0.0.1:{port}/hello") as r:
                assert (r.status, await r.text()) == (200, "still here")
    finally:
        await runner.cleanup()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
