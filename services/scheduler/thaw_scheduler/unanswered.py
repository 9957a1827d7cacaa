"""Inputs nobody will consume: answered, then removed from INVOKE.

Anyone may publish an Invoke on ``thaw.invoke.<app>.<fn>`` (other languages
do it over plain NATS), and INVOKE keeps every input until it is consumed. An
input for an app or function that is not deployed would wait there forever
with its caller: no consumer reads that subject, no agent pulls it. Every
``SWEEP_EVERY_S`` this looks at INVOKE's per-subject counts (the ones the
reconcile loop read last: one read serves both, and Postgres is asked only
when some subject has no function in the scheduler's catalog); an input on a
subject no deployed function owns, stored for at least
``contract.UNANSWERED_GRACE_S`` (a deploy racing its first input is not
mistaken for none), is answered with a Result signed with its key, under its call's
msg-id (so a result that an agent stored first wins) and then deleted from the stream:

- an app that was stopped: ``cancelled``, "app X was stopped";
- otherwise: ``failure``, naming what is not deployed.

The inputs of a deployed function that no node can run (``fleet_fit``), older
than the pending limit while it has been so for as long, fail the same way,
saying why.

What cannot be read as an Invoke is refused (``Service.reject``), answered when
a call id can still be read, and deleted too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection

import msgspec
from thaw_core import contract, fleet_fit
from thaw_core.bus import Bus, StoredMsg
from thaw_core.refusal import Reject
from thaw_core.result_proof import result_msg_id, signed
from thaw_core.schema import CallStatus, Invoke, Result, decoder, readable_call, result_for

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 1.0
# Inputs answered per subject and sweep: a flood is worked off over a few
# sweeps rather than holding up the others.
PER_SUBJECT_LIMIT = 1000

Key = tuple[str, str]


class Deployed(msgspec.Struct, frozen=True):
    """What is deployed now: the functions, and the apps that were stopped."""

    functions: frozenset[Key]
    stopped_apps: frozenset[str]
    # Deployed functions no node could ever run, for longer than the pending
    # limit: why (``fleet_fit``).
    nowhere: dict[Key, str] = msgspec.field(default_factory=dict)

    @property
    def apps(self) -> frozenset[str]:
        return frozenset(app for app, _ in self.functions)


def why_unanswered(key: Key, deployed: Deployed) -> tuple[CallStatus, str] | None:
    """How an input for ``key`` is answered; None when a deployed function owns it."""
    app, function = key
    if key in deployed.functions:
        return None
    if app in deployed.stopped_apps:
        return "cancelled", f"app {app!r} was stopped before this input ran"
    if app in deployed.apps:
        return "failure", f"app {app!r} has no function {function!r}"
    return "failure", f"no app {app!r} is deployed (the input named {app}.{function})"


class UnansweredInputs:
    def __init__(
        self,
        bus: Bus,
        deployed: Callable[[], Awaitable[Deployed]],
        reject: Reject,
        clock: Callable[[], float] = time.time,
        pending_limit_s: float | None = None,
    ) -> None:
        self._bus = bus
        self.pending_limit_s = pending_limit_s or fleet_fit.pending_limit_s()
        self._deployed = deployed
        self._reject = reject
        self._clock = clock
        self._invoke = decoder(Invoke)

    async def sweep(
        self, with_inputs: Collection[Key], catalog: Collection[Key], nowhere: Collection[Key]
    ) -> int:
        """Answer and remove what nobody consumes, and what waited its pending
        limit for a function no node can run, among the functions
        ``with_inputs`` stored; how many inputs that was. What ``catalog``
        (the scheduler's view, maybe a moment old) owns and is not
        ``nowhere`` to run is left alone at no cost: Postgres is asked only
        when some input may need an answer."""
        suspects = [key for key in with_inputs if key not in catalog]
        if not suspects and not any(key in with_inputs for key in nowhere):
            return 0
        deployed = await self._deployed()
        answered = 0
        horizon = self._clock() - contract.UNANSWERED_GRACE_S
        for key in suspects:
            why = why_unanswered(key, deployed)
            if why is not None:
                answered += await self._answer_older(contract.invoke_subject(*key), horizon, *why)
        waited = self._clock() - self.pending_limit_s
        for (app, function), reason in deployed.nowhere.items():
            error = (
                f"{app}.{function} waited {self.pending_limit_s:g}s ({fleet_fit.PENDING_LIMIT_ENV})"
                f" and {reason}"
            )
            subject = contract.invoke_subject(app, function)
            answered += await self._answer_older(subject, waited, "failure", error)
        if answered:
            log.warning("answered inputs nobody consumes", extra={"inputs": answered})
        return answered

    async def _answer_older(
        self, subject: str, horizon: float, status: CallStatus, why: str
    ) -> int:
        """Answer the inputs on ``subject`` stored before ``horizon``; how many."""
        seq = answered = 0
        for _ in range(PER_SUBJECT_LIMIT):
            stored = await self._bus.next_stored(subject, seq)
            if stored is None or stored.stored_at > horizon:
                break  # the rest is younger still
            seq = stored.seq
            await self._answer(subject, stored, status, why)
            answered += 1
        return answered

    async def _answer(self, subject: str, stored: StoredMsg, status: CallStatus, why: str) -> None:
        """Publish the input's Result, then delete it (a failed publish keeps it
        for the next sweep)."""
        result: Result | None = None
        key = b""
        try:
            invoke: Invoke = self._invoke.decode(stored.data)
            result, key = result_for(invoke, status, error=why), invoke.key
        except msgspec.DecodeError as e:
            await self._reject(subject, stored.data, "malformed", f"invalid Invoke: {e}")
            call_id, key = readable_call(stored.data)
            if call_id:
                result = Result(call_id=call_id, status="failure", error=f"invalid Invoke: {e}")
        if result is not None:
            # Signed with the input's key, as an agent signs a result.
            await self._bus.publish(
                contract.result_subject(result.call_id),
                signed(key, result),
                msg_id=result_msg_id(key, result.call_id),
            )
        await self._bus.delete_stored(subject, stored.seq)
