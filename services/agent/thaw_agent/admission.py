"""Admission: whether an input fetched for a function runs here now.

::

    too large, does not decode, wrong subject, bad call id
                                 -> refused (reject; a failure Result when a call
                                    id is readable, so its caller is told), term
    cancelled already?           -> ack, skip (the gateway published the result)
    not_before too far ahead     -> refused (INVOKE_MAX_DELAY_S)
    not_before in the future?    -> nak with the remaining delay
    redelivered and has a result? -> ack, skip
    otherwise                    -> run it
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import msgspec
from thaw_core.bus import Bus, Msg, num_delivered, settle
from thaw_core.contract import INVOKE_MAX_DELAY_S, result_subject
from thaw_core.refusal import Reject, error_code
from thaw_core.result_proof import stored_result
from thaw_core.schema import Invoke, Result, decoder, is_call_id, readable_call

from thaw_agent.dispatch_policy import (
    CANCELLED_MEMORY,
    CANCELLED_TTL_S,
    MAX_INPUT_BYTES,
    DispatchTimings,
)

log = logging.getLogger("thaw.agent.dispatch")

# (the input's key, its result): signs and stores it.
PublishResult = Callable[[bytes, Result], Awaitable[None]]


class Admission:
    def __init__(
        self,
        bus: Bus,
        reject: Reject,
        publish_result: PublishResult,
        timings: DispatchTimings,
    ) -> None:
        self._bus = bus
        self._reject = reject
        self._publish_result = publish_result
        self._timings = timings
        self._invoke_decoder = decoder(Invoke)
        self._cancelled: OrderedDict[str, float] = OrderedDict()

    # ------------------------------------------------------------ cancelled calls

    def cancelled(self, call_id: str) -> bool:
        return call_id in self._cancelled

    def remember_cancelled(self, call_id: str) -> None:
        now = time.time()
        self._cancelled[call_id] = now
        self._cancelled.move_to_end(call_id)
        horizon = now - CANCELLED_TTL_S
        while self._cancelled and (
            len(self._cancelled) > CANCELLED_MEMORY
            or next(iter(self._cancelled.values())) < horizon
        ):
            self._cancelled.popitem(last=False)

    # ------------------------------------------------------------ admitting

    async def admit(self, key: tuple[str, str], msg: Msg) -> Invoke | None:
        """The input to run, or None when it was settled here (refused,
        cancelled, delayed or already done)."""
        data = msg.data
        if len(data) > MAX_INPUT_BYTES:
            await self._refuse(msg, "too_large", f"input of {len(data)} bytes")
            return None
        try:
            invoke: Invoke = self._invoke_decoder.decode(data)
        except msgspec.DecodeError as e:
            await self._refuse(msg, error_code(e), f"invalid Invoke: {e}")
            return None
        if (invoke.app, invoke.function) != key:
            await self._refuse(
                msg,
                "malformed",
                f"Invoke for {invoke.app}.{invoke.function} published on {msg.subject}",
            )
            return None
        if not is_call_id(invoke.call_id):
            await self._refuse(msg, "malformed", f"invalid call_id {invoke.call_id!r}")
            return None
        if self.cancelled(invoke.call_id):
            await settle(msg, "ack")
            return None
        wait = invoke.not_before - time.time()
        if wait > INVOKE_MAX_DELAY_S:
            await self._refuse(
                msg,
                "malformed",
                f"not_before is {wait:.0f}s ahead; an input may wait at most"
                f" {INVOKE_MAX_DELAY_S:g}s",
            )
            return None
        if wait > 0.001:
            await settle(msg, "nak", delay_s=wait)
            return None
        if num_delivered(msg) > 1 and await self._has_result(invoke):
            log.info("redelivered input already has a result", extra={"call_id": invoke.call_id})
            await settle(msg, "ack")
            return None
        return invoke

    async def _has_result(self, invoke: Invoke) -> bool:
        """Whether a real result is stored: a forged one must not make a
        redelivered input be skipped. (An input without a key has no way to
        tell: any result counts, as its caller reads any.)"""
        if not invoke.key:
            return await self._bus.last(result_subject(invoke.call_id)) is not None
        return await stored_result(self._bus, invoke.call_id, invoke.key) is not None

    async def _refuse(self, msg: Msg, code: str, error: str) -> None:
        """Reject a malformed input; tell its caller when we can read who that is."""
        await self._reject(msg.subject, msg.data, code, error)
        call_id, result_key = readable_call(msg.data)
        if call_id:
            failure = Result(
                call_id=call_id, status="failure", error=f"the agent refused the input: {error}"
            )
            try:
                await self._publish_result(result_key, failure)
            except Exception:
                # The caller would wait forever: keep the input and try again later.
                log.exception("could not publish the refusal", extra={"call_id": call_id})
                await settle(msg, "nak", delay_s=self._timings.retry_on_error_s)
                return
        await settle(msg, "term")
