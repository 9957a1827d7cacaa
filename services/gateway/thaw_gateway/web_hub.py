"""The one subscription through which this gateway hears the parts of the
web requests it holds (``contract.web_gateway_subjects``), handing each to
the request's queue. Parts of a request no longer held are answered with an
error, so the agent stops at once instead of waiting out its timeout."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

from nats.aio.msg import Msg
from thaw_core.bus import Bus
from thaw_core.contract import WEB_REQUEST, web_gateway_subjects

_PREFIX = WEB_REQUEST.split("{", 1)[0]


class WebHub:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.gateway_id = uuid.uuid4().hex[:12]
        self._held: dict[str, asyncio.Queue[Msg]] = {}
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._bus.subscribe(
            web_gateway_subjects(self.gateway_id), self._on_message, unbounded=True
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_message(self, msg: Msg) -> None:
        request_id = msg.subject[len(_PREFIX) :].rsplit(".", 1)[0]
        queue = self._held.get(request_id)
        if queue is not None:
            queue.put_nowait(msg)
        else:
            await self._bus.reply_error(msg, f"web request {request_id} is over", "410")

    @contextlib.contextmanager
    def hold(self) -> Iterator[tuple[str, asyncio.Queue[Msg]]]:
        """A new request id and the queue its parts arrive on, while held."""
        request_id = f"{self.gateway_id}.{secrets.token_hex(16)}"
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._held[request_id] = queue
        try:
            yield request_id, queue
        finally:
            del self._held[request_id]
