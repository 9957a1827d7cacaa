"""The gateway's side of a web request (``web_exchange.Exchange``) on a real
aiohttp server, fed the parts an agent would relay: a container's first word
may be its response, carrying the acceptance in it (one message, not two),
and a run again after the first one's container died, once the first began
its answer, cuts the client's response short rather than splice two runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fixtures.ports import free_port
from thaw_core.schema import Invoke, Result, WebAccepted, WebResponsePart, encode_web
from thaw_gateway.web_exchange import Exchange, RequestBody


class FakeMsg:
    """A part as the gateway's subscription hands it over, answerable."""

    def __init__(self, part: Any) -> None:
        self.subject = "thaw.web.gw.r1.resp"
        self.data = encode_web(part)
        self.answers: list[bytes] = []

    async def respond(self, data: bytes) -> None:
        self.answers.append(data)


Script = Callable[[asyncio.Queue[Any]], Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Any]]:
    """A server whose one route runs an Exchange fed by ``script``; its URL."""
    runners: list[web.AppRunner] = []

    async def start(script: Script) -> str:
        async def handler(request: web.Request) -> web.StreamResponse:
            parts: asyncio.Queue[Any] = asyncio.Queue()
            gw: Any = SimpleNamespace(settings=SimpleNamespace(web_start_timeout_s=30.0))
            invoke = Invoke(call_id="c1", app="a", function="f")
            result: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            feeding = asyncio.ensure_future(script(parts))
            try:
                body = RequestBody(request, 1 << 20)
                return await Exchange(request, gw, invoke, body, parts, result).run()
            finally:
                feeding.cancel()

        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}/"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_response_that_carries_its_acceptance_is_answered_whole(
    serve: Callable[[Script], Any],
) -> None:
    async def script(parts: asyncio.Queue[Any]) -> None:
        part = WebResponsePart(status=201, body=b"made", accepted_by="ctr-1")
        parts.put_nowait(FakeMsg(part))

    url = await serve(script)
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert (r.status, await r.read()) == (201, b"made")


async def test_a_run_again_after_an_answer_began_cuts_the_response_short(
    serve: Callable[[Script], Any],
) -> None:
    acked = asyncio.Event()
    first = FakeMsg(WebResponsePart(status=200, body=b"first run ", more=True, accepted_by="c-1"))

    async def script(parts: asyncio.Queue[Any]) -> None:
        parts.put_nowait(first)
        while not first.answers:  # the gateway wrote it to the client and acked it
            await asyncio.sleep(0.01)
        acked.set()
        # Its container died; the request was redelivered to another.
        parts.put_nowait(FakeMsg(WebAccepted(container_id="c-2")))
        parts.put_nowait(FakeMsg(WebResponsePart(status=200, body=b"second run")))

    url = await serve(script)
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    assert acked.is_set()


async def test_a_second_acceptance_before_any_answer_is_served(
    serve: Callable[[Script], Any],
) -> None:
    async def script(parts: asyncio.Queue[Any]) -> None:
        parts.put_nowait(FakeMsg(WebAccepted(container_id="c-1")))
        # c-1 died before it answered or read the body: c-2 runs it afresh.
        parts.put_nowait(FakeMsg(WebResponsePart(status=200, body=b"ok", accepted_by="c-2")))

    url = await serve(script)
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert (r.status, await r.read()) == (200, b"ok")
