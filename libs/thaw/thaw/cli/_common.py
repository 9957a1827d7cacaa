"""What the SDK's commands share: how an expected error ends a command (one
red line, exit 1, no traceback), consoles, and small formatting helpers."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rich.markup import escape

from thaw._output import console, error_console
from thaw.exception import Error

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    error_console().print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    sys.exit(code)


def expected_errors(f: F) -> F:
    """thaw's own errors (gateway answers, bad options) end the command with
    their message; a Ctrl-C ends it quietly with 130."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except Error as e:
            fail(str(e))
        except KeyboardInterrupt:
            error_console().print("[yellow]interrupted[/yellow]")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def ago(timestamp: float) -> str:
    if not timestamp:
        return "-"
    seconds = max(0.0, time.time() - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


__all__ = ["ago", "console", "error_console", "escape", "expected_errors", "fail"]
