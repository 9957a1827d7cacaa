"""The gateway's lifecycle: an aiohttp server on ``gateway_host:gateway_port``.

This module only starts and stops the HTTP server and mounts routes; the API
itself (deploy, invoke, calls, tokens) lives in other modules of this package
and is mounted in :meth:`GatewayService.mount`.

- ``GET /healthz`` (no auth): the service's health, as the JSON ``HealthReply``;
  200 when ok, 503 when degraded.
"""

from __future__ import annotations

from aiohttp import web
from thaw_core.schema import encode
from thaw_core.service import Service

SERVICE_KEY: web.AppKey[GatewayService] = web.AppKey("thaw_gateway.service")


class GatewayService(Service):
    name = "gateway"
    uses_blob = True  # code bundles

    _runner: web.AppRunner | None = None

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app[SERVICE_KEY] = self
        self.mount(app)
        return app

    def mount(self, app: web.Application) -> None:
        """Add the routes. Later issues add the API here (from their own modules)."""
        app.router.add_get("/healthz", self.healthz)

    async def healthz(self, request: web.Request) -> web.Response:
        reply = await self.health()
        return web.Response(
            body=encode(reply),
            status=200 if reply.status == "ok" else 503,
            content_type="application/json",
        )

    async def setup(self) -> None:
        host, port = self.settings.gateway_host, self.settings.gateway_port
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            self._runner = None
            raise
        self.log.info("gateway listening", extra={"url": f"http://{host}:{port}"})

    async def checks(self) -> dict[str, str]:
        return {"http": "ok" if self._runner is not None else "not listening"}

    async def teardown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
