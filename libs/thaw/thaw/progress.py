"""The progress bar of ``.map()`` on a terminal: done/total, rate, failures,
and, while the gateway is away, that it is reconnecting (``thaw._reconnect``).

Shown only when stdout is a terminal, outside containers, and unless
``THAW_PROGRESS=0``; rich is imported only then.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, Protocol

from thaw._env import is_local
from thaw._reconnect import lost_for


class Progress(Protocol):
    def advance(self, *, failed: bool = False) -> None: ...


class _NoProgress:
    def advance(self, *, failed: bool = False) -> None:
        pass


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task
        self._failed = 0

    def advance(self, *, failed: bool = False) -> None:
        self._failed += failed
        self._progress.update(self._task, advance=1, failed=self._failed)


def wanted() -> bool:
    return is_local() and os.environ.get("THAW_PROGRESS", "1") != "0" and sys.stdout.isatty()


def reconnect_note() -> Any:
    """What the bar says while the gateway is away (rich Text; empty otherwise)."""
    from rich.text import Text

    lost = lost_for()
    if lost is None:
        return Text("")
    return Text(f"  reconnecting to the gateway ({lost:.0f}s)", style="yellow")


@contextlib.contextmanager
def map_progress(label: str, total: int | None) -> Iterator[Progress]:
    if not wanted():
        yield _NoProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    from thaw._output import console

    class RateAndFailures(ProgressColumn):
        def render(self, task: Any) -> Text:
            text = Text(f"{task.speed:,.1f}/s" if task.speed else "", style="cyan")
            if task.fields.get("failed"):
                text.append(f"  {task.fields['failed']} failed", style="red")
            return text + reconnect_note()

    progress = RichProgress(
        "[bold]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        RateAndFailures(),
        TimeElapsedColumn(),
        console=console(),
    )
    task = progress.add_task(f"map {label}", total=total, failed=0)
    with progress:
        yield _Bar(progress, task)
