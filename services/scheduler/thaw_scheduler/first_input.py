"""Wake the reconcile loop at a cold function's first input.

A function scaled to zero would otherwise wait for the next tick before its
first container is asked for. The scheduler holds a plain NATS subscription
on the INVOKE subject of each deployed function that has no container, and
drops it once the function has one: an idle function costs a subscription
and no traffic, a busy one costs nothing per input (its inputs reach only
INVOKE and the agents), and only the first inputs of a cold function reach
the scheduler, each of which merely sets the wake event.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
from thaw_core import contract
from thaw_core.bus import Bus, Msg, Subscription

Key = tuple[str, str]


class FirstInputs:
    def __init__(self, bus: Bus, wake: asyncio.Event) -> None:
        self._bus = bus
        self._wake = wake
        self._subs: dict[Key, Subscription] = {}
        self._watched_for: tuple[frozenset[Key], frozenset[Key]] | None = None

    async def watch(self, deployed: frozenset[Key], warm: frozenset[Key]) -> None:
        """Listen on the functions in ``deployed`` that are not ``warm`` (no
        container live or asked for), and on no other. Does nothing when
        neither changed since the last call (``deployed`` is compared by
        identity: the catalog's key set, new at each refresh), so an idle
        tick costs no more with more functions."""
        if self._watched_for is not None:
            was_deployed, was_warm = self._watched_for
            if was_deployed is deployed and was_warm == warm:  # the catalog by identity
                return
        cold = deployed - warm
        for key in self._subs.keys() - cold:
            sub = self._subs.pop(key)
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        added = [key for key in cold if key not in self._subs]
        for key in added:
            self._subs[key] = await self._bus.subscribe(
                contract.invoke_subject(*key), self._on_input, live=False
            )
        if added:
            await self._bus.subscriptions_live()
        self._watched_for = (deployed, warm)

    async def _on_input(self, msg: Msg) -> None:
        self._wake.set()
