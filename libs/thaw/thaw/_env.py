"""Where this process runs: on a user's machine, or inside a thaw container."""

from __future__ import annotations

import os

# Set by the agent in every container it starts.
CONTAINER_ID_ENV = "THAW_CONTAINER_ID"


def is_local() -> bool:
    """True outside a thaw container (``modal.is_local``)."""
    return CONTAINER_ID_ENV not in os.environ
