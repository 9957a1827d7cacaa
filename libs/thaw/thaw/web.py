"""Web endpoint markers: ``@thaw.fastapi_endpoint``, ``@thaw.web_endpoint``,
``@thaw.asgi_app()``, ``@thaw.wsgi_app()``, ``@thaw.web_server(port)``.

They only mark the function (``__thaw_web__``); ``@app.function`` / ``@app.cls``
record the mark into ``FunctionSpec.experimental_options["web"]`` for the
gateway: ``{"kind": "endpoint" | "asgi" | "wsgi" | "server", ...}``, and for a
class ``{"methods": {name: {...}}}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from thaw.exception import InvalidError

F = TypeVar("F", bound=Callable[..., Any])

_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _marker(decorator: str, web: dict[str, Any]) -> Callable[[F], F]:
    def mark(f: F) -> F:
        if hasattr(f, "spec"):
            raise InvalidError(
                f"@thaw.{decorator} goes below @app.function / @app.cls, next to the function"
            )
        if not callable(f):
            raise InvalidError(f"@thaw.{decorator} decorates a function, got {f!r}")
        f.__thaw_web__ = web  # type: ignore[attr-defined]
        return f

    return mark


def _options(**options: Any) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v not in (None, False)}


def fastapi_endpoint(
    _f: F | None = None,
    *,
    method: str = "GET",
    label: str | None = None,
    docs: bool = False,
    requires_proxy_auth: bool = False,
) -> Any:
    """A plain function served over HTTP; its JSON body or query becomes its arguments."""
    if method.upper() not in _METHODS:
        raise InvalidError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    mark = _marker(
        "fastapi_endpoint",
        {
            "kind": "endpoint",
            "method": method.upper(),
            **_options(label=label, docs=docs, requires_proxy_auth=requires_proxy_auth),
        },
    )
    return mark(_f) if _f is not None else mark


web_endpoint = fastapi_endpoint


def asgi_app(
    _f: F | None = None, *, label: str | None = None, requires_proxy_auth: bool = False
) -> Any:
    """The function returns an ASGI app (FastAPI, Starlette, ...) that serves every path."""
    mark = _marker(
        "asgi_app",
        {"kind": "asgi", **_options(label=label, requires_proxy_auth=requires_proxy_auth)},
    )
    return mark(_f) if _f is not None else mark


def wsgi_app(
    _f: F | None = None, *, label: str | None = None, requires_proxy_auth: bool = False
) -> Any:
    """The function returns a WSGI app (Flask, Django, ...)."""
    mark = _marker(
        "wsgi_app",
        {"kind": "wsgi", **_options(label=label, requires_proxy_auth=requires_proxy_auth)},
    )
    return mark(_f) if _f is not None else mark


def web_server(
    port: int, *, startup_timeout: float = 5.0, label: str | None = None
) -> Callable[[F], F]:
    """The function starts a server listening on ``port`` inside the container."""
    if not isinstance(port, int) or not 0 < port < 65536:
        raise InvalidError(f"web_server port must be 1-65535, got {port!r}")
    return _marker(
        "web_server",
        {
            "kind": "server",
            "port": port,
            "startup_timeout": startup_timeout,
            **_options(label=label),
        },
    )
