"""The memory request bodies read whole may take, all requests together.

A JSON body is read into memory and decoded there: a request reserves twice
its length (its text, and what it decodes to) from the gateway's budget
(``Settings.gateway_body_budget_bytes``) before it reads a byte, and gives
it back when its answer is sent. Requests that find the budget spent wait
their turn (a 503 after ``WAIT_S``); one larger than the whole budget is
refused at once with a 413 naming the setting. Bodies that stream (uploads,
web endpoints) take no share: they never hold more than a chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from thaw_gateway.errors import ApiError, too_large

BUDGET_NAME = "THAW_GATEWAY_BODY_BUDGET_BYTES"
# Text and decoded value (base64 decodes to 3/4 of its text).
SHARE_PER_BYTE = 2
WAIT_S = 120.0
_HELD: web.RequestKey[int] = web.RequestKey("thaw_gateway.body_budget.held", int)


class BodyBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._waiting = 0
        self._freed = asyncio.Condition()

    async def reserve(self, request: web.Request, body_bytes: int, what: str) -> None:
        """Hold ``body_bytes``' share for ``request`` until it is answered."""
        need = body_bytes * SHARE_PER_BYTE
        if need > self.total:
            raise too_large(
                f"{what} of {body_bytes} bytes needs {need} bytes of the gateway's memory for"
                f" request bodies, more than all of it ({self.total}, {BUDGET_NAME})"
            )
        if self.used + need > self.total:  # else no wait (one thread: nothing between)
            self._waiting += 1
            try:
                async with self._freed:
                    await asyncio.wait_for(
                        self._freed.wait_for(lambda: self.used + need <= self.total), WAIT_S
                    )
                    self.used += need
            except TimeoutError:
                raise ApiError(
                    503,
                    "unavailable",
                    f"the gateway's memory for request bodies ({self.total} bytes,"
                    f" {BUDGET_NAME}) stayed taken for {WAIT_S:g}s; send it again later",
                ) from None
            finally:
                self._waiting -= 1
        else:
            self.used += need
        request[_HELD] = request.get(_HELD, 0) + need

    async def release(self, request: web.Request) -> None:
        held = request.get(_HELD, 0)
        if not held:
            return
        request[_HELD] = 0
        self.used -= held
        if self._waiting:
            async with self._freed:
                self._freed.notify_all()


BUDGET: web.AppKey[BodyBudget] = web.AppKey("thaw_gateway.body_budget", BodyBudget)


@web.middleware
async def body_budget_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Gives back what the request's bodies reserved, once it is answered."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    finally:
        with contextlib.suppress(Exception):
            await request.app[BUDGET].release(request)
