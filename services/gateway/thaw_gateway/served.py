"""Options a deploy may carry only when this platform carries them out.

A decorator or option that deploys and then does nothing (a web endpoint that
answers no request, an experimental switch nobody reads) costs its user time
while it reports success, so the deploy is refused instead, naming each one.
"""

from __future__ import annotations

from collections.abc import Sequence

from thaw_core.schema import FunctionSpec

from thaw_gateway.errors import bad_request

# experimental_options keys that some part of the platform reads.
SERVED_EXPERIMENTAL_OPTIONS = frozenset({"enable_gpu_snapshot"})

# What the SDK records under experimental_options["web"]; kept apart so the
# refusal says "web endpoint" rather than "unknown option".
_WEB = "web"


def _problems(spec: FunctionSpec) -> list[str]:
    problems: list[str] = []
    options = spec.experimental_options
    if _WEB in options:
        problems.append(
            f"{spec.name}: web endpoints (@thaw.fastapi_endpoint, @thaw.web_endpoint,"
            " @thaw.asgi_app, @thaw.wsgi_app, @thaw.web_server) are not served by this"
            " platform yet; call the function with .remote() or over"
            " POST /v1/functions/<app>/<function>/calls instead"
        )
    unknown = sorted(k for k in options if k != _WEB and k not in SERVED_EXPERIMENTAL_OPTIONS)
    if unknown:
        problems.append(
            f"{spec.name}: experimental_options {', '.join(map(repr, unknown))} are not"
            f" known here (known: {', '.join(sorted(SERVED_EXPERIMENTAL_OPTIONS))})"
        )
    return problems


def check_served(functions: Sequence[FunctionSpec]) -> None:
    """Refuse the deploy (400) when any function asks for what is not served."""
    problems = [p for spec in functions for p in _problems(spec)]
    if problems:
        raise bad_request("this deploy asks for what thaw does not do:\n  " + "\n  ".join(problems))
