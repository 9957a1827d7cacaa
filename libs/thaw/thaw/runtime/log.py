"""The runtime's own messages: plain lines on stderr, which the agent turns
into the container's log next to the user's output.

Only the ``thaw.runtime`` logger is configured; the root logger stays the
user's to set up."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("thaw.runtime")


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("thaw: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
