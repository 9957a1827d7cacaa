"""Riding out a gateway restart: a call, a poll, a batch or a result stream
that loses the gateway tries again with backoff, for up to the reconnect
window (``THAW_RECONNECT_S``, 300 s by default; 0 gives up at once), then
raises ``ConnectionError`` saying so.

Nothing is sent twice by it: calls and batches carry a request key, so a
request sent again names the same calls (``CallRequest.request_key``), and
streams are reopened for the results still missing only.

While anything is reconnecting, :func:`lost_for` says for how long; the
progress bar of ``.map()`` shows it, and the first loss of an outage is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from thaw import exception

RECONNECT_ENV = "THAW_RECONNECT_S"
DEFAULT_WINDOW_S = 300.0
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 5.0

log = logging.getLogger("thaw")
T = TypeVar("T")

# Operations reconnecting now, each with when it lost the gateway.
_lost: dict[int, float] = {}


def window_s() -> float:
    text = os.environ.get(RECONNECT_ENV, "")
    if not text:
        return DEFAULT_WINDOW_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise exception.InvalidError(
            f"{RECONNECT_ENV}={text!r}: give the seconds to keep reconnecting (0 or more)"
        )
    return value


def lost_for() -> float | None:
    """Seconds since the oldest loss of the gateway not yet got over, else None."""
    found = list(_lost.values())
    return time.monotonic() - min(found) if found else None


class Reconnect:
    """One operation's reconnection: :meth:`failed` waits before the next try
    (or raises once the gateway has been away past the window); :meth:`ok`
    after any progress starts the window afresh."""

    def __init__(self, what: str, *, shown: bool = True) -> None:
        # shown: its outage counts in lost_for() (a follow that may stay quiet
        # once back, and so never says it is, does not).
        self.what = what
        self.shown = shown
        self.window = window_s()
        self.since: float | None = None
        self.delay = FIRST_DELAY_S
        # Whether a request of this operation may have reached the gateway unanswered.
        self.failed_before = False

    async def failed(self, error: exception.ConnectionError) -> None:
        now = time.monotonic()
        self.failed_before = True
        if self.window <= 0:
            raise error
        if self.since is None:
            self.since = now
            if self.shown:
                self._note_lost(error)
        elif (away := now - self.since) >= self.window:
            self.ok()
            raise exception.ConnectionError(
                f"{self.what}: gave up after {away:.0f}s without the gateway, past the"
                f" reconnect window ({RECONNECT_ENV}={self.window:g}s); last error: {error}"
            ) from None
        await asyncio.sleep(self.delay * random.uniform(0.5, 1.0))
        self.delay = min(self.delay * 2, MAX_DELAY_S)

    def _note_lost(self, error: exception.ConnectionError) -> None:
        if not _lost:  # the first of an outage says so
            log.warning(
                "lost the thaw gateway (%s); reconnecting for up to %gs (%s)",
                error,
                self.window,
                RECONNECT_ENV,
            )
        _lost[id(self)] = time.monotonic()

    def ok(self) -> None:
        if self.since is not None:
            self.since = None
            self.delay = FIRST_DELAY_S
            _lost.pop(id(self), None)


async def reconnecting(what: str, attempt: Callable[[bool], Awaitable[T]]) -> T:
    """``attempt(resend)`` until it gets an answer; ``resend`` is True once a
    try may have reached the gateway without its answer coming back."""
    again = Reconnect(what)
    try:
        while True:
            try:
                answer = await attempt(again.failed_before)
            except exception.ConnectionError as e:
                await again.failed(e)
                continue
            return answer
    finally:
        again.ok()
