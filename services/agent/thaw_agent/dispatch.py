"""Input dispatch: JetStream INVOKE -> local containers -> RESULTS.

For every function with a Ready local container, a puller (``Bus.pull``) on
the function's shared INVOKE consumer (``contract.invoke_consumer``) asks
for no more inputs than its containers have free slots, so the rest stays
with other agents. A fetch is a long poll for up to all the free slots at
once: a new input starts at once, a busy function takes its inputs in
batches, and the agent never holds an input it has no slot for.

One input, at least once::

    fetch -> admission (``admission``: refuse, skip, delay or run)
          -> RunInput to the least-busy Ready container; kept alive every few s
    Output -> its Result; a retry or the result published, THEN the input
              acked (``completion``)

A container that dies under its inputs fails them (one failed attempt each,
retried per the function's ``retries``); one the agent stops releases them
(nak, no delay) for redelivery, here or elsewhere; one that ran past the function's timeout gets a
``timeout`` Result (subject to retries) and is killed and replaced, since a
synchronous Python thread cannot be stopped from the outside. A container
that fails to initialise fails the inputs it is handed with its error.
Timings, limits and the retry rules are ``dispatch_policy``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any

import msgspec
from thaw_core.bus import Bus, KeepAlive, Msg, num_delivered, settle
from thaw_core.container_protocol import (
    CancelInput,
    InitFailed,
    Output,
    RunInput,
    WebFrame,
)
from thaw_core.contract import ConsumerSpec, invoke_consumer
from thaw_core.schema import CancelCall, Invoke, decoder

from thaw_agent.admission import Admission, Reject
from thaw_agent.completion import Completion, Running
from thaw_agent.container import Container
from thaw_agent.dispatch_policy import DispatchTimings
from thaw_agent.held_inputs import HeldInputs
from thaw_agent.manager import ContainerManager
from thaw_agent.payloads import PayloadError, Payloads
from thaw_agent.tracing import start_input_span, traceparent
from thaw_agent.web_bridge import WebBridge

__all__ = ["Dispatcher", "Reject", "Running"]

log = logging.getLogger("thaw.agent.dispatch")

Key = tuple[str, str]


class Dispatcher:
    """Feeds the node's containers; implements ``container_events.ContainerEvents``."""

    def __init__(
        self,
        bus: Bus,
        manager: ContainerManager,
        reject: Reject,
        timings: DispatchTimings | None = None,
        payloads: Payloads | None = None,
    ) -> None:
        self._bus = bus
        self._m = manager
        # None: the platform's default limits (thaw_core.config.Settings).
        self._payloads = payloads or Payloads.defaults(manager.blob)
        self._reject = reject
        self.timings = timings or DispatchTimings()
        self._cancel_decoder = decoder(CancelCall)
        self._running: dict[str, Running] = {}
        self._pullers: dict[Key, asyncio.Task[None]] = {}
        self._changed: dict[Key, asyncio.Event] = {}
        self._claimed: dict[Key, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        # Input ids name an input to its container: unique per agent run is enough.
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        self._input_seq = itertools.count(1)
        self._web = WebBridge(bus)
        self.held = HeldInputs(manager.layout.held_inputs)
        manager.events = self

    @property
    def timings(self) -> DispatchTimings:
        return self._timings

    @timings.setter
    def timings(self, timings: DispatchTimings) -> None:
        self._timings = timings
        self._completion = Completion(self._bus, timings, self._is_cancelled, self._payloads)
        self._admission = Admission(
            self._bus, self._reject, self._completion.publish_result, timings
        )

    def _is_cancelled(self, call_id: str) -> bool:
        return self._admission.cancelled(call_id)

    # ------------------------------------------------------------ views

    def running(self) -> list[Running]:
        return list(self._running.values())

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        t = asyncio.create_task(coro, name=name)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _wake(self, key: Key) -> None:
        ev = self._changed.get(key)
        if ev is not None:
            ev.set()

    def _consumer(self, key: Key) -> ConsumerSpec:
        return replace(invoke_consumer(*key), ack_wait_s=self._timings.ack_wait_s)

    # ------------------------------------------------------------ container events

    def container_ready(self, container: Container) -> None:
        self._wake(container.key)
        self._ensure_puller(container.key)

    def container_output(self, container: Container, output: Output) -> None:
        r = self._running.pop(output.input_id, None)
        if r is None:
            # Its timeout fired or the call was terminated first: already settled.
            log.info("output for an input no longer running", extra={"input_id": output.input_id})
            return
        r.end_span(output.status, output.error, output)
        r.stop_timers()
        container.release(output.input_id)
        self._wake(container.key)
        self._spawn(self._completion.finish(r, output), f"complete:{r.invoke.call_id}")

    def container_gone(self, container: Container) -> None:
        for r in [r for r in self._running.values() if r.container is container]:
            del self._running[r.input_id]
            r.stop_timers()
            container.release(r.input_id)
            self._spawn(self._completion.release(r), f"release:{r.invoke.call_id}")
        self._wake(container.key)

    def container_web(self, container: Container, frame: WebFrame) -> None:
        self._web.on_frame(container, frame)

    def container_init_failed(self, container: Container, failure: InitFailed) -> None:
        if not self._stopping:
            self._spawn(self._fail_inputs(container, failure), f"init-failed:{container.id}")

    # ------------------------------------------------------------ pulling

    def _ensure_puller(self, key: Key) -> None:
        if self._stopping:
            return
        t = self._pullers.get(key)
        if t is not None and not t.done():
            return
        self._changed.setdefault(key, asyncio.Event())
        self._claimed.setdefault(key, 0)
        t = asyncio.create_task(self._pull(key), name=f"pull:{key[0]}.{key[1]}")
        self._pullers[key] = t
        t.add_done_callback(lambda t: self._puller_done(key, t))

    def _puller_done(self, key: Key, t: asyncio.Task[None]) -> None:
        if self._pullers.get(key) is t:
            del self._pullers[key]
        if not t.cancelled() and t.exception() is not None:
            log.error("puller crashed", exc_info=t.exception(), extra={"function": ".".join(key)})
        # A container may have become Ready while this puller was winding down.
        if self._m.ready(key):
            self._ensure_puller(key)

    def _free_slots(self, key: Key) -> int | None:
        """Slots of the function's Ready containers not yet claimed by a
        fetched input; None when it has none Ready (the puller ends)."""
        ready = self._m.ready(key)
        if not ready or self._stopping:
            return None
        return sum(c.free_slots for c in ready) - self._claimed[key]

    async def _pull(self, key: Key) -> None:
        # The gateway creates the consumer at deploy; pulling creates it too, so
        # that the agent works for inputs published by anyone before or without one.
        def take(msg: Msg) -> None:
            self._claimed[key] += 1
            self.held.add(msg)
            self._spawn(self._take(key, msg), f"input:{msg.subject}")

        await self._bus.pull(
            self._consumer(key),
            take,
            free_slots=lambda: self._free_slots(key),
            slots_freed=self._changed[key],
            batch=self._timings.max_fetch,
            fetch_timeout_s=self._timings.fetch_timeout_s,
        )

    async def _take(self, key: Key, msg: Msg) -> None:
        claimed = True

        def unclaim() -> None:
            nonlocal claimed
            if claimed:
                claimed = False
                self._claimed[key] -= 1
                self._wake(key)

        try:
            invoke = await self._admission.admit(key, msg)
            if invoke is None:
                return
            ready = [c for c in self._m.ready(key) if c.free_slots > 0]
            if not ready:
                await settle(msg, "nak")  # our container went away meanwhile: someone else's turn
                return
            target = max(ready, key=lambda c: (c.free_slots, -len(c.inflight)))
            unclaim()
            await self._run(target, invoke, msg)
        except asyncio.CancelledError:
            await settle(msg, "nak")
            raise
        except Exception:
            log.exception("could not dispatch an input", extra={"subject": msg.subject})
            await settle(msg, "nak", delay_s=self._timings.retry_on_error_s)
        finally:
            unclaim()

    # ------------------------------------------------------------ running

    async def _run(self, container: Container, invoke: Invoke, msg: Msg) -> None:
        r = Running(f"{self._id_prefix}{next(self._input_seq)}", msg, invoke, container)
        container.assign(r.input_id)
        self._running[r.input_id] = r
        r.keepalive = KeepAlive(msg, self._timings.in_progress_every_s)
        r.span = start_input_span(msg, invoke, container.id, self._m.layout.node_id)
        if container.spec.timeout_s > 0:  # 0: no limit
            r.timer = asyncio.get_running_loop().call_later(
                container.spec.timeout_s, self._on_timeout, r.input_id
            )
        try:
            args, args_file = await self._payloads.args_for(invoke, container, r.input_id)
        except PayloadError as e:
            if self._running.pop(r.input_id, None) is not None:
                r.stop_timers()
                container.release(r.input_id)
                await self._completion.fail(r, str(e))
            return
        run = RunInput(
            input_id=r.input_id,
            codec=invoke.codec,
            method=invoke.method,
            params=invoke.params,
            args=args,
            args_file=args_file,
            call_id=invoke.call_id,
            web=invoke.web,
            traceparent=traceparent(r.span),
        )
        try:
            if invoke.web is not None:
                again = num_delivered(msg) > 1
                self._web.taken(invoke.web, container, r.input_id, again=again)
            await container.send(run)
        except Exception as e:  # noqa: BLE001 - any send failure means a broken connection
            # The connection broke: the container is dying and will say so.
            if self._running.pop(r.input_id, None) is not None:
                log.warning("could not hand over an input", extra={"error": repr(e)})
                r.stop_timers()
                container.release(r.input_id)
                self._payloads.discard_args(container, args_file)
                await settle(msg, "nak")

    def _on_timeout(self, input_id: str) -> None:
        r = self._running.pop(input_id, None)
        if r is None:
            return
        r.end_span("timeout", f"ran past its {r.container.spec.timeout_s:g}s timeout")
        r.stop_timers()
        c = r.container
        c.retire()  # no new input for it: it is about to be killed
        c.release(input_id)
        timeout = c.spec.timeout_s
        c.system_log(
            f"call {r.invoke.call_id} timed out after {timeout:g}s; replacing the container"
        )
        self._spawn(
            self._completion.fail(
                r, f"{r.invoke.function} timed out after {timeout:g}s", status="timeout"
            ),
            f"timeout:{r.invoke.call_id}",
        )
        self._spawn(
            self._m.replace(c, f"an input ran past its {timeout:g}s timeout"), f"replace:{c.id}"
        )

    async def _fail_inputs(self, container: Container, failure: InitFailed) -> None:
        """A container that cannot initialise fails what it is handed, so that
        callers see the error instead of waiting for a container that never comes."""
        key = container.key
        try:
            msgs = await self._bus.fetch(
                self._consumer(key),
                max(1, container.spec.max_inputs),
                timeout_s=self._timings.init_failed_fetch_s,
            )
        except Exception:
            log.exception("could not fetch inputs to fail", extra={"container_id": container.id})
            return
        # None fetched: nobody is waiting, the failure shows in heartbeats only.
        error = f"the container failed to initialise: {failure.error}"
        for msg in msgs:
            try:
                invoke = await self._admission.admit(key, msg)
            except Exception:  # noqa: BLE001 - redelivered later; the others go on
                await settle(msg, "nak", delay_s=self._timings.retry_on_error_s)
                continue
            if invoke is None:
                continue
            await self._completion.fail(
                Running("", msg, invoke, container),
                error,
                traceback=failure.traceback,
                exc=failure.exc,
            )

    # ------------------------------------------------------------ cancellation

    async def on_cancel(self, msg: Msg) -> None:
        """Handler of ``thaw.cancel.*`` (core NATS)."""
        try:
            cancel: CancelCall = self._cancel_decoder.decode(msg.data)
        except msgspec.DecodeError as e:
            await self._reject(msg.subject, msg.data, "malformed", f"invalid CancelCall: {e}")
            return
        call_id = cancel.call_id
        self._admission.remember_cancelled(call_id)
        for r in [r for r in self._running.values() if r.invoke.call_id == call_id]:
            c = r.container
            if cancel.terminate_containers:
                del self._running[r.input_id]
                r.stop_timers()
                c.retire()
                c.release(r.input_id)
                self._spawn(settle(r.msg, "ack"), f"ack:{call_id}")
                self._spawn(self._m.replace(c, f"call {call_id} was cancelled"), f"replace:{c.id}")
            else:
                with contextlib.suppress(Exception):
                    await c.send(CancelInput(input_id=r.input_id))

    # ------------------------------------------------------------ shutdown

    async def close(self) -> None:
        """Stop pulling. Running inputs finish or are released as their containers stop."""
        self._stopping = True
        for t in list(self._pullers.values()):
            t.cancel()
        if self._pullers:
            await asyncio.wait(list(self._pullers.values()), timeout=5)

    async def drain(self, timeout_s: float) -> None:
        """Wait for result publishing and releases already under way."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
