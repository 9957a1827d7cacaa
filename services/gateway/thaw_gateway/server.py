"""Assembling the API: the in-memory state opened on the service's
connections, and the aiohttp application (middlewares, then the routes of
``routes.ROUTES``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from thaw_core.api import MAX_PAYLOAD_BYTES
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.config import Settings
from thaw_core.db import Database
from thaw_core.schema import HealthReply

from thaw_gateway.auth import TokenStore, auth_middleware
from thaw_gateway.call_log import CallLog
from thaw_gateway.catalog import FunctionCatalog
from thaw_gateway.errors import error_middleware
from thaw_gateway.results import Reject, ResultHub
from thaw_gateway.routes import mount
from thaw_gateway.secret_store import open_secrets
from thaw_gateway.secrets import serve_secrets
from thaw_gateway.state import GATEWAY, Gateway


@dataclass
class OpenGateway:
    """The gateway's state plus what must be closed with it."""

    gateway: Gateway
    subscriptions: list[Any]

    def loops(self) -> list[Callable[[], Awaitable[None]]]:
        gw = self.gateway

        async def write_call_log() -> None:
            await gw.calls.run(gw.stopping)

        async def refresh_catalog() -> None:
            await gw.catalog.refresh_forever(gw.stopping)

        return [write_call_log, refresh_catalog]

    def release(self) -> None:
        """Answer the requests waiting for results now (202: poll again), so
        that the HTTP server can stop without waiting out their long polls."""
        self.gateway.results.release_waiters()

    async def close(self) -> None:
        await self.gateway.results.stop()
        for sub in self.subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await self.gateway.calls.flush()


async def open_gateway(
    *,
    settings: Settings,
    bus: Bus,
    db: Database,
    blob: BlobStore,
    stopping: asyncio.Event,
    reject: Reject,
    health: Callable[[], Awaitable[HealthReply]],
) -> OpenGateway:
    tokens = TokenStore(db)
    await tokens.bootstrap_admin(settings.state_dir)
    catalog = FunctionCatalog(db)
    results = ResultHub(bus, reject)
    await results.start()
    # Subscribe (live on the server once follow() returns) before loading,
    # so a deploy between the two is not missed.
    app_events = await catalog.follow(bus)
    await catalog.load_all()
    secrets = await open_secrets(db, settings.state_dir)
    secret_fetches = await serve_secrets(bus, secrets)
    gw = Gateway(
        settings=settings,
        bus=bus,
        db=db,
        blob=blob,
        tokens=tokens,
        catalog=catalog,
        results=results,
        calls=CallLog(db),
        secrets=secrets,
        stopping=stopping,
        reject=reject,
        health=health,
    )
    return OpenGateway(gateway=gw, subscriptions=[app_events, secret_fetches])


def build_app(gw: Gateway) -> web.Application:
    app = web.Application(
        client_max_size=MAX_PAYLOAD_BYTES,
        # Errors outermost, so that a refused token is an ErrorBody too.
        middlewares=[error_middleware, auth_middleware(gw.tokens)],
    )
    app[GATEWAY] = gw
    mount(app)
    return app
