"""The gateway's lifecycle: the HTTP API served by aiohttp on
``gateway_host:gateway_port``.

This module only opens the gateway's state on the service's connections,
starts and stops the HTTP server and runs the gateway's loops; the API itself
(routes, auth, deploy, calls, tokens) lives in the other modules of this
package (``server.open_gateway`` / ``server.build_app``). ``GET /healthz``
needs no token: the service's health as a JSON ``HealthReply``, 200 when ok,
503 when degraded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from thaw_core.service import Service

from thaw_gateway.server import OpenGateway, build_app, open_gateway
from thaw_gateway.state import Gateway


class GatewayService(Service):
    name = "gateway"
    uses_blob = True  # code bundles

    # The aiohttp application, once set up.
    app: web.Application | None = None
    _runner: web.AppRunner | None = None
    _open: OpenGateway | None = None

    async def setup(self) -> None:
        assert self.db is not None and self.blob is not None
        self._open = await open_gateway(
            settings=self.settings,
            bus=self.bus,
            db=self.db,
            blob=self.blob,
            stopping=self.stopping,
            reject=self.reject,
            health=self.health,
        )
        host, port = self.settings.gateway_host, self.settings.gateway_port
        self.app = build_app(self._open.gateway)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            await self._open.close()
            self._open = None
            raise
        self._runner = runner
        self.log.info("gateway listening", extra={"url": f"http://{host}:{port}"})

    @property
    def gateway(self) -> Gateway:
        """The API's state (catalog, results, tokens), once set up."""
        if self._open is None:
            raise RuntimeError("the gateway is not set up")
        return self._open.gateway

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return self._open.loops() if self._open is not None else ()

    async def checks(self) -> dict[str, str]:
        return {"http": "ok" if self._runner is not None else "not listening"}

    async def teardown(self) -> None:
        # Stop taking requests first (in-flight ones finish, long polls at
        # once), then the state.
        if self._open is not None:
            self._open.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._open is not None:
            await self._open.close()
            self._open = None
