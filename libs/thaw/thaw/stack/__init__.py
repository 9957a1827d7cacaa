"""The embedded stack: `thaw up` / `thaw down` / `thaw status`.

One supervisor process (``Stack``) runs nats-server, a private Postgres, the
blob directory and every thaw service as child processes, all under one state
dir (``THAW_STATE_DIR``); see ``thaw.stack.state`` for its layout.
"""

from thaw.stack.detach import start_detached
from thaw.stack.parts import AGENT, SERVICES
from thaw.stack.state import StackPaths, stack_processes
from thaw.stack.status import PartStatus, StackStatus, stack_status, stop_stack
from thaw.stack.supervisor import (
    Stack,
    StackAlreadyRunning,
    StackError,
    StackInfo,
    StartupFailed,
)

__all__ = [
    "AGENT",
    "SERVICES",
    "PartStatus",
    "Stack",
    "StackAlreadyRunning",
    "StackError",
    "StackInfo",
    "StackPaths",
    "StackStatus",
    "StartupFailed",
    "stack_processes",
    "stack_status",
    "start_detached",
    "stop_stack",
]
