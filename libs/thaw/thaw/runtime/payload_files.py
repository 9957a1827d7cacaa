"""Large arguments and return values, as files beside the agent's socket.

Over ``container_protocol.FILE_PAYLOAD_BYTES`` they do not go in a frame:
the agent writes an input's arguments to a file the ``RunInput`` names, and
the runtime writes a large return value to one its ``Output`` names (with
its sha256, which the agent checks as it stores it). Whoever reads a file
removes it; a value is written once, read once.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from thaw_core.container_protocol import FILE_PAYLOAD_BYTES, SOCKET_IN_CONTAINER, RunInput
from thaw_core.contract import ENV_AGENT_SOCKET


def _beside_socket(name: str) -> Path:
    return Path(os.environ.get(ENV_AGENT_SOCKET, SOCKET_IN_CONTAINER)).parent / name


def args_of(run: RunInput) -> bytes:
    """The input's encoded arguments, read from their file when they came as one."""
    if not run.args_file:
        return run.args
    path = _beside_socket(run.args_file)
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def value_fields(input_id: str, encoded: bytes) -> dict[str, Any]:
    """The ``Output`` fields that carry an encoded return value."""
    if len(encoded) <= FILE_PAYLOAD_BYTES:
        return {"value": encoded}
    name = f"value-{input_id}"
    path = _beside_socket(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(encoded)
    return {"value_file": name, "value_sha256": hashlib.sha256(encoded).hexdigest()}
