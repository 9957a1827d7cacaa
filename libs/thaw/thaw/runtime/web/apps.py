"""The ASGI app behind each kind of web endpoint (``thaw.web``'s marks):

- ``endpoint``: the function itself as the one route of a FastAPI app, so
  its arguments come from the query string or the JSON body, from its type
  hints, as FastAPI does;
- ``asgi``: what the function returns;
- ``wsgi``: what the function returns, through a2wsgi;
- ``server``: the function starts a server on a port inside the container;
  requests are proxied to it once it listens.

Each app runs its ASGI lifespan startup once, when it is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Callable
from typing import Any

from thaw.runtime.web.exchange import Asgi
from thaw.runtime.web.proxy import not_listening, proxy_app, wait_for_port

# What each kind imports in the container, checked at start so that a missing
# one fails the container with its name rather than the first request.
NEEDS: dict[str, tuple[str, ...]] = {
    "endpoint": ("fastapi",),
    "asgi": (),
    "wsgi": ("a2wsgi",),
    "server": ("httpx",),
}


def check_imports(options: list[dict[str, Any]]) -> None:
    for option in options:
        kind = option.get("kind", "")
        for module in NEEDS.get(kind, ()):
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise ImportError(
                    f"a @thaw.{_decorator(kind)} endpoint needs {module!r} in the image"
                    f" (add it with Image.pip_install({module!r})): {e}"
                ) from e


def _decorator(kind: str) -> str:
    return {
        "endpoint": "fastapi_endpoint",
        "asgi": "asgi_app",
        "wsgi": "wsgi_app",
        "server": "web_server",
    }.get(kind, kind)


def _endpoint_app(fn: Callable[..., Any], option: dict[str, Any]) -> Asgi:
    from fastapi import FastAPI

    docs = bool(option.get("docs"))
    app = FastAPI(
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.add_api_route("/", fn, methods=[option.get("method", "GET")])
    return app


async def build_app(
    option: dict[str, Any], fn: Callable[..., Any], call: Callable[..., Any]
) -> Asgi:
    """The app of one endpoint. ``fn`` is the decorated callable (bound to its
    instance for a class); ``call`` runs a sync or async callable where it belongs."""
    kind = option.get("kind")
    if kind == "endpoint":
        app = _endpoint_app(fn, option)
    elif kind == "asgi":
        app = await call(fn)
    elif kind == "wsgi":
        from a2wsgi import WSGIMiddleware

        app = WSGIMiddleware(await call(fn))
    elif kind == "server":
        await call(fn)
        port = int(option["port"])
        timeout_s = float(option.get("startup_timeout", 5.0))
        if not await wait_for_port(port, time.monotonic() + timeout_s):
            raise not_listening(port, timeout_s, "of the function's return")
        return proxy_app(port, timeout_s)
    else:
        raise ValueError(f"unknown web endpoint kind {kind!r}")
    if not callable(app):
        raise TypeError(f"the @thaw.{_decorator(kind or '')} function returned {app!r}, not an app")
    await _lifespan_startup(app)
    return app


async def _lifespan_startup(app: Asgi) -> None:
    """Run the app's startup events; an app without lifespan support is fine."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
    inbox.put_nowait({"type": "lifespan.startup"})

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete" and not started.done():
            started.set_result(None)
        elif message["type"] == "lifespan.startup.failed" and not started.done():
            started.set_result(message.get("message", "lifespan startup failed"))

    async def run() -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        with contextlib.suppress(Exception):  # an app without lifespan support raises
            await app(scope, inbox.get, send)
        if not started.done():
            started.set_result(None)

    task = asyncio.create_task(run(), name="thaw-web-lifespan")
    _LIFESPANS.add(task)
    failed = await started
    if failed:
        with contextlib.suppress(Exception):
            task.cancel()
        raise RuntimeError(f"the app's startup failed: {failed}")


# Lifespan tasks live as long as their apps (the container).
_LIFESPANS: set[asyncio.Task[None]] = set()
