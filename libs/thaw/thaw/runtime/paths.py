"""What the agent mounts into a container for the runtime, host side.

- :func:`bootstrap_file` at :data:`BOOTSTRAP_IN_CONTAINER`, run as
  ``/usr/bin/python3 /opt/thaw/bootstrap.py``;
- each of :func:`runtime_paths` at ``/opt/thaw/path/<n>``, read-only, listed
  colon-separated in ``THAW_RUNTIME_PATHS`` (:func:`runtime_paths_env`);
- the extracted code bundle at :data:`BUNDLE_IN_CONTAINER`;
- the agent's socket at ``thaw_core.container_protocol.SOCKET_IN_CONTAINER``.
"""

from __future__ import annotations

import importlib.util
import os

from thaw.runtime.bootstrap import BUNDLE_DIR as BUNDLE_IN_CONTAINER

BOOTSTRAP_IN_CONTAINER = "/opt/thaw/bootstrap.py"
RUNTIME_PATH_IN_CONTAINER = "/opt/thaw/path/{n}"

# What the runtime imports; the image's python3 must be ABI-compatible (3.11)
# with the compiled one, msgspec.
RUNTIME_PACKAGES = ("thaw", "thaw_core", "cloudpickle", "msgspec")

__all__ = [
    "BOOTSTRAP_IN_CONTAINER",
    "BUNDLE_IN_CONTAINER",
    "RUNTIME_PACKAGES",
    "bootstrap_file",
    "runtime_paths",
    "runtime_paths_env",
]


def bootstrap_file() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap.py")


def runtime_paths() -> list[str]:
    """Host directories that make :data:`RUNTIME_PACKAGES` importable, each
    once, in a stable order."""
    paths: list[str] = []
    for name in RUNTIME_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(
                f"the runtime needs the package {name!r}, which is not installed"
            )
        root = os.path.dirname(os.path.abspath(next(iter(spec.submodule_search_locations))))
        if root not in paths:
            paths.append(root)
    return paths


def runtime_paths_env(count: int) -> str:
    """``THAW_RUNTIME_PATHS`` for ``count`` mounted paths."""
    return ":".join(RUNTIME_PATH_IN_CONTAINER.format(n=n) for n in range(count))
