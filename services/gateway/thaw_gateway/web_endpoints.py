"""Which web endpoints a deploy has, their labels and their URLs.

An endpoint is a function, or a method of a class, that carries a
``thaw.web`` mark (``FunctionSpec.experimental_options["web"]``). Its label is
the mark's ``label`` or its name (``<Class>-<method>`` for a method),
lower-cased with ``_`` as ``-`` so that it is a host name label. It answers at
``<app>--<label>.<THAW_WEB_DOMAIN>`` (by the Host header) when the gateway
has a web domain, and at ``/web/<app>/<label>/`` on the gateway always; URLs
are printed in the first form when a domain is set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from thaw_core.schema import FunctionSpec

WEB_OPTION = "web"
PATH_PREFIX = "/web/"
HOST_SEPARATOR = "--"


@dataclass(frozen=True)
class Endpoint:
    function: str
    method: str | None
    label: str
    option: dict[str, Any]

    @property
    def name(self) -> str:
        """How deploy output names it: the function, or ``Class.method``."""
        return self.function if self.method is None else f"{self.function}.{self.method}"

    @property
    def requires_proxy_auth(self) -> bool:
        return bool(self.option.get("requires_proxy_auth"))


def host_label(name: str) -> str:
    return name.lower().replace("_", "-")


def endpoints(specs: Iterable[FunctionSpec]) -> list[Endpoint]:
    found: list[Endpoint] = []
    for spec in specs:
        web = spec.experimental_options.get(WEB_OPTION)
        if not isinstance(web, dict):
            continue
        if "kind" in web:
            found.append(_endpoint(spec.name, None, web, spec.name))
        for method, option in (web.get("methods") or {}).items():
            found.append(_endpoint(spec.name, method, option, f"{spec.name}-{method}"))
    return found


def _endpoint(function: str, method: str | None, option: dict[str, Any], name: str) -> Endpoint:
    return Endpoint(function, method, host_label(option.get("label") or name), option)


def find(specs: Iterable[FunctionSpec], label: str) -> Endpoint | None:
    label = host_label(label)
    return next((e for e in endpoints(specs) if e.label == label), None)


def url(scheme: str, host: str, domain: str, app: str, label: str) -> str:
    """``host``: how the client reached the gateway (``name[:port]``)."""
    if not domain:
        return f"{scheme}://{host}{PATH_PREFIX}{app}/{label}"
    _, colon, port = host.rpartition(":")
    port_part = f":{port}" if colon and port.isdigit() else ""
    return f"{scheme}://{host_label(app)}{HOST_SEPARATOR}{label}.{domain}{port_part}"


def web_urls(
    scheme: str, host: str, domain: str, app: str, specs: Iterable[FunctionSpec]
) -> dict[str, str]:
    return {e.name: url(scheme, host, domain, app, e.label) for e in endpoints(specs)}


def split_host(host: str, domain: str) -> tuple[str, str] | None:
    """(app, label) of a Host header ``<app>--<label>.<domain>[:port]``."""
    if not domain:
        return None
    name = host.rsplit(":", 1)[0].lower() if not host.startswith("[") else ""
    suffix = "." + domain
    if not name.endswith(suffix):
        return None
    app, sep, label = name[: -len(suffix)].rpartition(HOST_SEPARATOR)
    return (app, label) if sep and app and label else None


def split_path(path: str) -> tuple[str, str, str] | None:
    """(app, label, the rest) of ``/web/<app>/<label>[/rest]``."""
    if not path.startswith(PATH_PREFIX):
        return None
    app, _, rest = path[len(PATH_PREFIX) :].partition("/")
    label, slash, tail = rest.partition("/")
    if not app or not label:
        return None
    return app, label, slash + tail
