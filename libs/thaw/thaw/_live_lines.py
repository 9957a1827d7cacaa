"""Lines of progress, with a spinner on what is under way when stdout is a
terminal (plain lines otherwise, for CI logs): what the deploy's image
builds (``build_progress``) and memory snapshots (``snapshot_progress``)
print through."""

from __future__ import annotations

from typing import Any, Self

from thaw._output import console


class LiveLines:
    def __init__(self, *, live: bool | None = None) -> None:
        self.out = console()
        self.live = self.out.is_terminal if live is None else live
        self._status: Any = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.spin(None)

    def spin(self, text: str | None) -> None:
        """The spinner's text, on a terminal only; None: no spinner."""
        if not self.live:
            return
        if text is None:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        if self._status is None:
            self._status = self.out.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def print(self, text: str, style: str = "") -> None:
        if self.live:
            # No markup: labels hold "[1/5]" and build output holds anything.
            self.out.print(text, style=style or None, markup=False, highlight=False)
        else:
            print(text, flush=True)
