"""Options a deploy may carry only when this platform carries them out.

A decorator or option that deploys and then does nothing (an experimental
switch nobody reads) costs its user time
while it reports success, so the deploy is refused instead, naming each one.
"""

from __future__ import annotations

from collections.abc import Sequence

from thaw_core.schema import FunctionSpec

from thaw_gateway.errors import bad_request
from thaw_gateway.web_endpoints import WEB_OPTION

# experimental_options keys that some part of the platform reads ("web": the
# SDK's record of a web endpoint, see web_endpoints).
SERVED_EXPERIMENTAL_OPTIONS = frozenset({"enable_gpu_snapshot", WEB_OPTION})


def _problems(spec: FunctionSpec) -> list[str]:
    problems: list[str] = []
    options = spec.experimental_options
    unknown = sorted(k for k in options if k not in SERVED_EXPERIMENTAL_OPTIONS)
    if unknown:
        problems.append(
            f"{spec.name}: experimental_options {', '.join(map(repr, unknown))} are not"
            f" known here (known: {', '.join(sorted(SERVED_EXPERIMENTAL_OPTIONS))})"
        )
    if options.get("enable_gpu_snapshot") and not spec.enable_memory_snapshot:
        # It only changes what a memory snapshot holds: alone, it would do nothing.
        problems.append(
            f"{spec.name}: experimental_options 'enable_gpu_snapshot' needs"
            " enable_memory_snapshot=True"
        )
    return problems


def check_served(functions: Sequence[FunctionSpec]) -> None:
    """Refuse the deploy (400) when any function asks for what is not served."""
    problems = [p for spec in functions for p in _problems(spec)]
    if problems:
        raise bad_request("this deploy asks for what thaw does not do:\n  " + "\n  ".join(problems))
