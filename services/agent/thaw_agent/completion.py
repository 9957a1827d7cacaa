"""The end of one input: its ``Result`` (built here, the one place), a retry
or the result published, THEN the input acked. A failed publish naks it, so
the input runs again rather than being lost."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import nats.errors
from opentelemetry.trace import Span
from thaw_core import metrics
from thaw_core.bus import Bus, KeepAlive, Msg, settle
from thaw_core.container_protocol import Output
from thaw_core.contract import invoke_subject, result_subject
from thaw_core.result_proof import signed, signed_with_msg_id
from thaw_core.schema import CallStatus, Invoke, Result, result_for

from thaw_agent.container import Container
from thaw_agent.dispatch_policy import DispatchTimings, next_attempt, retry_msg_id
from thaw_agent.payloads import Payloads
from thaw_agent.tracing import end_input_span

log = logging.getLogger("thaw.agent.dispatch")


@dataclass(eq=False)
class Running:
    """One input handed to a container, until its result is stored."""

    input_id: str
    msg: Msg
    invoke: Invoke
    container: Container
    started_at: float = field(default_factory=time.time)
    keepalive: KeepAlive | None = None
    timer: asyncio.TimerHandle | None = None
    span: Span | None = None  # the agent's trace span of it (tracing)

    def end_span(self, status: str, error: str = "", output: Output | None = None) -> None:
        if self.span is not None:
            span, self.span = self.span, None
            c = self.container
            end_input_span(
                span, status, error, output, container_id=c.id, restored=str(c.restored).lower()
            )

    def stop_timers(self) -> None:
        """Once it ended (its span too, if not ended with how)."""
        if self.keepalive is not None:
            self.keepalive.stop()
        if self.timer is not None:
            self.timer.cancel()
        self.end_span("released")


def result_of_output(r: Running, output: Output) -> Result:
    return result_for(
        r.invoke,
        output.status,
        container_id=r.container.id,
        value=output.value,
        exc=output.exc,
        error=output.error,
        traceback=output.traceback,
        started_at=output.started_at or r.started_at,
        finished_at=output.finished_at,
    )


class Completion:
    def __init__(
        self,
        bus: Bus,
        timings: DispatchTimings,
        cancelled: Callable[[str], bool],
        payloads: Payloads,
    ) -> None:
        self._bus = bus
        self._timings = timings
        self._cancelled = cancelled
        self._payloads = payloads

    async def finish(self, r: Running, output: Output) -> None:
        """The container answered: its result (a large value stored apart), then as complete."""
        result = result_of_output(r, output)
        try:
            result = await self._payloads.offloaded(result, output, r.container)
        except Exception as e:  # noqa: BLE001 - a blob store down: the input runs again
            log.warning("could not store a large result; the input will run again: %r", e)
            await settle(r.msg, "nak", delay_s=self._timings.retry_on_error_s)
            return
        await self.complete(r, result)

    async def complete(self, r: Running, result: Result) -> None:
        """Store the outcome of one run (a retry, or its result), then ack the input."""
        invoke, status = r.invoke, result.status
        try:
            if self._cancelled(invoke.call_id):
                await settle(r.msg, "ack")  # the gateway published "cancelled"
                return
            if status == "terminated":
                # The container stopped under the call (scale-down, agent
                # shutdown): not the call's doing, so it runs again elsewhere.
                await self.release(r)
                return
            policy = r.container.spec.retries
            retry = next_attempt(invoke, status, policy)
            if retry is None:
                await self.publish_result(invoke.key, result)
                metrics.call_finished(
                    invoke.app, invoke.function, status, result.finished_at - result.started_at
                )
            else:
                await self._bus.publish(
                    invoke_subject(invoke.app, invoke.function), retry, msg_id=retry_msg_id(retry)
                )
                r.container.system_log(
                    f"call {invoke.call_id} attempt {invoke.attempt} ended with {status}"
                    f" ({result.error}); retrying in {policy.delay_s(invoke.attempt):g}s"
                )
            await settle(r.msg, "ack")
        except asyncio.CancelledError:
            await settle(r.msg, "nak")
            raise
        except Exception:
            log.exception(
                "could not store a result; the input will run again",
                extra={"call_id": invoke.call_id},
            )
            await settle(r.msg, "nak", delay_s=self._timings.retry_on_error_s)

    async def fail(
        self, r: Running, error: str, status: CallStatus = "failure", **outcome: Any
    ) -> None:
        """End ``r`` with an outcome the agent saw, not one its container answered."""
        result = result_for(
            r.invoke,
            status,
            container_id=r.container.id,
            error=error,
            started_at=r.started_at,
            **outcome,
        )
        await self.complete(r, result)

    async def publish_result(self, key: bytes, result: Result) -> None:
        """Sign ``result`` with its input's key and store it under the msg-id
        every real result of the call shares (``thaw_core.result_proof``)."""
        subject = result_subject(result.call_id)
        proven, msg_id = signed_with_msg_id(key, result)
        try:
            await self._bus.publish(subject, proven, msg_id=msg_id)
        except nats.errors.MaxPayloadError:
            # Its value went to the blob store; what is left over is the
            # exception, its text or its traceback.
            size = len(result.exc) + len(result.error) + len(result.traceback)
            too_large = Result(
                call_id=result.call_id,
                status="failure",
                codec=result.codec,
                error=f"the call failed with an exception too large to deliver: {size} bytes"
                f" (the bus's limit is {self._bus.max_payload}): {result.error[:2000]}",
                attempts=result.attempts,
                map_id=result.map_id,
                index=result.index,
                container_id=result.container_id,
                started_at=result.started_at,
            )
            await self._bus.publish(subject, signed(key, too_large), msg_id=msg_id)

    async def release(self, r: Running) -> None:
        """The container under an input went away: a container that died (its
        process exited, an OOM kill, a lost connection) is most likely the
        input's own doing, so that is one failed attempt, retried per its
        policy and otherwise answered at once; one the agent stopped (scale-down,
        shutdown) lets the input run elsewhere."""
        c = r.container
        if c.state == "failed":
            await self.fail(r, c.out_of_memory or f"the container died running this input: {c.error}")
            return
        await settle(r.msg, "nak")
