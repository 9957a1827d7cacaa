"""The runtime's own packages, as a thaw-owned layer of images on another Python.

A container runs thaw's runtime (``thaw.runtime``) under the image's python3.
``thaw`` and ``thaw_core`` are pure Python: the agent mounts them from its
source tree into every container. Their third-party packages
(``thaw_core.runtime_dists``: msgspec, aiohttp, ... compiled for one Python
version) the agent gives only images whose Python is its own, as a directory
of exactly those distributions (``thaw_agent.runtime_dir``). An image on
another Python gets them here instead: ``pip install --no-deps --target`` of
those distributions, pinned to the versions the builder itself runs (those
thaw is tested with), into ``RUNTIME_DIR_IN_IMAGE``, as a layer right on the
image's base: cached like any layer, so once per Python version (and base),
shared by every image on it, and rebuilt when thaw's lock moves a version.
"""

from __future__ import annotations

import shlex

from thaw_core.oci import RUNTIME_DIR_IN_IMAGE
from thaw_core.runtime_dists import RUNTIME_DISTRIBUTIONS, pinned
from thaw_core.schema import PipInstall

__all__ = ["RUNTIME_DIR_IN_IMAGE", "RUNTIME_DISTRIBUTIONS", "pinned", "runtime_step"]


def runtime_step() -> PipInstall:
    """The build step of the runtime layer (its identity names every version)."""
    options = f"--no-deps --no-compile --target {shlex.quote(RUNTIME_DIR_IN_IMAGE)}"
    return PipInstall(packages=pinned(), extra_options=options)
