"""Web endpoints as reached on a gateway with a web domain: by host name and
by path (where the app sees its ``root_path``), one behind a thaw token, and
one whose container never gets to take a request."""

from __future__ import annotations

import time

import thaw as modal
from fastapi import FastAPI, Request

app = modal.App("web-routing")

web_app = FastAPI()


@web_app.get("/where")
def where(request: Request) -> dict:
    return {"root_path": request.scope["root_path"], "url": str(request.url_for("where"))}


@app.function()
@modal.asgi_app(label="routes")
def routes() -> FastAPI:
    return web_app


@app.function()
@modal.fastapi_endpoint(requires_proxy_auth=True)
def guarded(name: str = "you") -> dict:
    return {"hello": name}


@app.cls()
class NeverReady:
    @modal.enter()
    def load(self) -> None:
        time.sleep(3600)  # the container never becomes ready

    @modal.fastapi_endpoint()
    def ping(self) -> dict:
        return {"pong": True}
