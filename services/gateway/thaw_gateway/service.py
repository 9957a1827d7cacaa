"""The gateway's lifecycle: the HTTP API served by aiohttp on
``gateway_host:gateway_port``.

Set-up opens the gateway's state on the service's connections (tokens, the
catalog of what is deployed, the one subscription that delivers results,
secrets and the agents' fetches of them),
then starts the HTTP server; the API itself (routes, auth, deploy, calls,
tokens) lives in the other modules of this package. Loops: ``write_call_log``
(the calls issued here, in batches) and ``refresh_catalog``. Shutdown stops
taking requests first (in-flight ones finish, long polls answer at once),
then closes the state. ``GET /healthz`` needs no token: the service's health
as a JSON ``HealthReply``, 200 when ok, 503 when degraded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from thaw_core import secrets_grant
from thaw_core.api import MAX_PAYLOAD_BYTES
from thaw_core.config import Settings
from thaw_core.service import Service
from thaw_core.tasks import Background
from thaw_core.volumes.paths import MAX_PATH_BYTES

from thaw_gateway.auth import TokenStore, auth_middleware
from thaw_gateway.body_budget import BUDGET, BodyBudget, body_budget_middleware
from thaw_gateway.call_log import CallLog
from thaw_gateway.catalog import FunctionCatalog
from thaw_gateway.errors import error_middleware
from thaw_gateway.payloads import PayloadSweeper, check_inline_fits
from thaw_gateway.results import ResultHub
from thaw_gateway.routes import mount
from thaw_gateway.secret_store import open_secrets
from thaw_gateway.secrets import serve_secrets
from thaw_gateway.state import GATEWAY, Gateway
from thaw_gateway.store_values_gc import StoreValueSweeper
from thaw_gateway.stores import serve_stores
from thaw_gateway.tracing import trace_middleware
from thaw_gateway.web_hub import WebHub
from thaw_gateway.web_requests import web_middleware
from thaw_gateway.web_route import WebResource


class GatewayService(Service):
    name = "gateway"
    uses_blob = True  # code bundles

    # The aiohttp application, once set up.
    app: web.Application | None = None
    _runner: web.AppRunner | None = None
    _gateway: Gateway | None = None
    _results: ResultHub | None = None
    _web: WebHub | None = None

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        # Closed with the state: app events, agents' secret fetches.
        self._subscriptions: list[Any] = []
        # Containers' store operations under way (a queue get may wait).
        self._store_tasks = Background(logging.getLogger("thaw.gateway.stores"))

    async def setup(self) -> None:
        try:
            self._gateway = await self._open_state()
            self.app = build_app(self._gateway)
            runner = web.AppRunner(
                self.app,
                access_log=None,
                handle_signals=False,
                # A request line holds a volume path of up to MAX_PATH_BYTES of UTF-8,
                # percent-encoded (x3): more than aiohttp's default 8 KiB.
                max_line_size=MAX_REQUEST_LINE,
            )
            await runner.setup()
            host, port = self.settings.gateway_host, self.settings.gateway_port
            try:
                await web.TCPSite(runner, host, port, reuse_address=True).start()
            except BaseException:
                await runner.cleanup()
                raise
        except BaseException:
            await self._close_state()
            raise
        self._runner = runner
        self.log.info("gateway listening", extra={"url": f"http://{host}:{port}"})

    async def _open_state(self) -> Gateway:
        assert self.db is not None and self.blob is not None
        check_inline_fits(self.settings.payload_inline_bytes, self.bus.max_payload)
        tokens = TokenStore(self.db)
        await tokens.bootstrap_admin(self.settings.state_dir)
        catalog = FunctionCatalog(self.db)
        self._results = ResultHub(self.bus, self.reject)
        await self._results.start()
        # Subscribe (live on the server once follow() returns) before loading,
        # so a deploy between the two is not missed.
        self._subscriptions.append(await catalog.follow(self.bus))
        await catalog.load_all()
        self._web = WebHub(self.bus)
        await self._web.start()
        secrets = await open_secrets(self.db, self.settings.state_dir)
        grant_key = secrets_grant.load_key(self.settings.state_dir)
        self._subscriptions.append(await serve_secrets(self.bus, secrets, grant_key))
        self._subscriptions.append(await serve_stores(self.bus, self._store_tasks))
        return Gateway(
            settings=self.settings,
            bus=self.bus,
            db=self.db,
            blob=self.blob,
            tokens=tokens,
            secrets=secrets,
            grant_key=grant_key,
            catalog=catalog,
            results=self._results,
            calls=CallLog(self.db),
            stopping=self.stopping,
            reject=self.reject,
            health=self.health,
            web=self._web,
        )

    @property
    def gateway(self) -> Gateway:
        """The API's state (catalog, results, tokens), once set up."""
        if self._gateway is None:
            raise RuntimeError("the gateway is not set up")
        return self._gateway

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.write_call_log, self.refresh_catalog, self.sweep_payloads, self.sweep_store_values]

    async def sweep_payloads(self) -> None:
        await PayloadSweeper(self.gateway.blob).run(self.stopping)

    async def sweep_store_values(self) -> None:
        await StoreValueSweeper(self.gateway.blob, self.gateway.bus).run(self.stopping)

    async def write_call_log(self) -> None:
        await self.gateway.calls.run(self.stopping)

    async def refresh_catalog(self) -> None:
        await self.gateway.catalog.refresh_forever(self.stopping)

    async def checks(self) -> dict[str, str]:
        return {"http": "ok" if self._runner is not None else "not listening"}

    async def teardown(self) -> None:
        # Requests waiting for results answer now (202: poll again), so that
        # the HTTP server stops without waiting out their long polls.
        if self._results is not None:
            self._results.release_waiters()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self._close_state()

    async def _close_state(self) -> None:
        if self._results is not None:
            await self._results.stop()
            self._results = None
        if self._web is not None:
            await self._web.stop()
            self._web = None
        for sub in self._subscriptions:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subscriptions = []
        await self._store_tasks.close(1.0)
        if self._gateway is not None:
            with contextlib.suppress(Exception):
                await self._gateway.calls.flush()
            self._gateway = None


MAX_REQUEST_LINE = 3 * MAX_PATH_BYTES + 8192


def build_app(gw: Gateway) -> web.Application:
    """The aiohttp application: middlewares, then the routes of ``routes.ROUTES``."""
    app = web.Application(
        client_max_size=MAX_PAYLOAD_BYTES,
        # Tracing outermost, so that its span sees the answer errors make of
        # exceptions; errors next, so that a refused token is an ErrorBody too.
        # Web endpoints before auth: they are public unless they ask for a token.
        middlewares=[
            trace_middleware,
            error_middleware,
            body_budget_middleware,
            web_middleware,
            auth_middleware(gw.tokens),
        ],
    )
    app[GATEWAY] = gw
    app[BUDGET] = BodyBudget(gw.settings.gateway_body_budget_bytes)
    mount(app)
    app.router.register_resource(WebResource(gw.settings.web_domain))
    return app
