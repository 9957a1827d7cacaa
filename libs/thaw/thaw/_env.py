"""Where this process runs: on a user's machine, or inside a thaw container."""

from __future__ import annotations

import contextvars
import os

from thaw_core.contract import ENV_CONTAINER_ID


def is_local() -> bool:
    """True outside a thaw container (``modal.is_local``): the agent sets the
    container id in every container it starts."""
    return ENV_CONTAINER_ID not in os.environ


# The call id of the input running in this thread or task (set by the runtime).
CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("thaw_call_id", default=None)


def current_function_call_id() -> str | None:
    """The id of the call whose input runs in this thread or task (as
    ``FunctionCall.object_id``); None outside an input, and locally."""
    return CALL_ID.get()
