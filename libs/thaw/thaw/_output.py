"""The one rich console the SDK and the CLI print through, so that log lines
and a map's progress bar share the terminal without tearing."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

_enabled = False


@contextlib.contextmanager
def enable_output() -> Iterator[None]:
    """``with thaw.enable_output():``: app runs started inside print their containers' logs."""
    global _enabled
    previous, _enabled = _enabled, True
    try:
        yield
    finally:
        _enabled = previous


def output_enabled() -> bool:
    return _enabled


@functools.cache
def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


@functools.cache
def error_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_log_line(line: Any) -> None:
    """One container log line (schema.LogLine): ``function container | text``."""
    from rich.text import Text

    style = {"stderr": "red", "system": "yellow"}.get(line.stream, "")
    text = Text(f"{line.function} ", style="dim")
    text.append(f"{line.container_id[:12]} ", style="dim")
    text.append(line.line.rstrip("\n"), style=style)
    console().print(text, soft_wrap=True)
