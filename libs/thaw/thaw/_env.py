"""Where this process runs: on a user's machine, or inside a thaw container."""

from __future__ import annotations

import os

from thaw_core.contract import ENV_CONTAINER_ID


def is_local() -> bool:
    """True outside a thaw container (``modal.is_local``): the agent sets the
    container id in every container it starts."""
    return ENV_CONTAINER_ID not in os.environ
