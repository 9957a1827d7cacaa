"""The third-party distributions thaw's in-container runtime imports, and
nothing else: what an image's runtime layer installs for its Python
(``thaw_builder.runtime_layer``) and what the agent gives containers on its
own Python (``thaw_agent.runtime_dir``). A container sees these, thaw and
thaw_core, and what its image installs: never the rest of the host's venv.

``tests/unit/test_runtime_layer.py`` checks that the runtime imports with
nothing else (every other distribution refused).
"""

from __future__ import annotations

import importlib.metadata

__all__ = ["RUNTIME_DISTRIBUTIONS", "pinned"]

# What the runtime imports besides the standard library, thaw and thaw_core,
# by distribution name, with what those need at import: `thaw.runtime.main`,
# and for web endpoints fastapi, httpx (web_server's proxy) and a2wsgi.
RUNTIME_DISTRIBUTIONS = (
    "a2wsgi",
    "aiohappyeyeballs",
    "aiohttp",
    "aiosignal",
    "annotated-doc",
    "annotated-types",
    "anyio",
    "argon2-cffi",
    "argon2-cffi-bindings",
    "attrs",
    "certifi",
    "cffi",
    "cloudpickle",
    "croniter",
    "fastapi",
    "frozenlist",
    "h11",
    "httpcore",
    "httpx",
    "idna",
    "minio",
    "msgspec",
    "multidict",
    "nats-py",
    "nkeys",
    "opentelemetry-api",
    "opentelemetry-exporter-http-transport",
    "opentelemetry-exporter-otlp-common",
    "opentelemetry-exporter-otlp-proto-common",
    "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-proto",
    "opentelemetry-sdk",
    "opentelemetry-semantic-conventions",
    "propcache",
    "protobuf",
    "pycparser",
    "pycryptodome",
    "pydantic",
    "pydantic_core",
    "PyNaCl",
    "python-dateutil",
    "six",
    "starlette",
    "typing-inspection",
    "typing_extensions",
    "urllib3",
    "yarl",
)


def pinned() -> list[str]:
    """``name==version`` of each runtime distribution, as installed here."""
    out: list[str] = []
    for name in RUNTIME_DISTRIBUTIONS:
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue  # not needed by this thaw (the import check says what is)
    return out
