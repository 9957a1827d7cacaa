"""Input dispatch: JetStream INVOKE -> local containers -> RESULTS.

For every function with a Ready local container, a puller fetches from the
function's shared durable consumer (``schema.consumer_name``) no more inputs
than its containers have free slots, so the rest stays with other agents.
A fetch is a long poll for up to all the free slots at once: a new input
starts at once, a busy function takes its inputs in batches, and the agent
never holds an input it has no slot for.

One input, at least once::

    fetch -> decode (malformed: reject, failure Result if a call id is readable, term)
          -> cancelled already?            ack, skip (the gateway publishes the result)
          -> not_before in the future?     nak with the remaining delay
          -> redelivered and has a result? ack, skip
          -> RunInput to the least-busy Ready container; in_progress() every few s
    Output -> failure/timeout with retries left: publish Invoke(attempt+1, not_before)
              else publish the Result (msg id = call id, JetStream drops a repeat)
           -> THEN ack the input. A failed publish naks it instead.

A container that dies releases its inputs (nak, no delay) for redelivery,
here or elsewhere; one that ran past the function's timeout gets a
``timeout`` Result (subject to retries) and is killed and replaced, since a
synchronous Python thread cannot be stopped from the outside. A container
that fails to initialise fails the inputs it is handed with its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from thaw_core import metrics
from thaw_core.bus import Bus, Msg
from thaw_core.container_protocol import CancelInput, InitFailed, Output, RunInput
from thaw_core.schema import (
    CancelCall,
    Invoke,
    Result,
    consumer_name,
    decoder,
    invoke_subject,
    result_subject,
)

from thaw_agent.container import Container
from thaw_agent.manager import ContainerManager

log = logging.getLogger("thaw.agent.dispatch")

INVOKE_STREAM = "INVOKE"
RESULTS_STREAM = "RESULTS"
ACK_WAIT_S = 10.0
IN_PROGRESS_EVERY_S = 3.0
FETCH_TIMEOUT_S = 2.0
# One pull asks for every free slot (up to this), so a busy function costs one
# round trip to the server per batch of inputs rather than per input.
MAX_FETCH = 256
# A refused input is published nowhere: keep what reject() previews of it small.
MAX_INPUT_BYTES = 64 * 1024 * 1024
CANCELLED_MEMORY = 10_000
CANCELLED_TTL_S = 3600.0
# An input whose container died under it this many times fails instead of
# being redelivered again: it is most likely what kills them.
MAX_CRASH_DELIVERIES = 5
RETRY_ON_ERROR_S = 1.0
# How long a container that failed to initialise waits for inputs to fail
# (a long poll: it returns as soon as there is one).
INIT_FAILED_FETCH_S = 5.0

# A call id becomes a subject token (thaw.result.<call_id>).
_CALL_ID = re.compile(r"^[^\s.*>]{1,256}$")

Reject = Callable[[str, bytes, str, str], Awaitable[None]]


class _CallIdOnly(msgspec.Struct):
    """What can still be read from a malformed Invoke: who is waiting for it."""

    call_id: str = ""


@dataclass(eq=False)
class Running:
    """One input handed to a container, until its result is stored."""

    input_id: str
    msg: Msg
    invoke: Invoke
    container: Container
    started_at: float = field(default_factory=time.time)
    keepalive: asyncio.TimerHandle | None = None
    timer: asyncio.TimerHandle | None = None

    def stop_timers(self) -> None:
        if self.keepalive is not None:
            self.keepalive.cancel()
        if self.timer is not None:
            self.timer.cancel()


class Dispatcher:
    """Feeds the node's containers; implements ``container.ContainerEvents``."""

    def __init__(self, bus: Bus, manager: ContainerManager, reject: Reject) -> None:
        self._bus = bus
        self._m = manager
        self._reject = reject
        self._invoke_decoder = decoder(Invoke)
        self._cancel_decoder = decoder(CancelCall)
        self._call_id_decoder = msgspec.json.Decoder(_CallIdOnly)
        self._running: dict[str, Running] = {}
        self._pullers: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._changed: dict[tuple[str, str], asyncio.Event] = {}
        self._claimed: dict[tuple[str, str], int] = {}
        self._cancelled: OrderedDict[str, float] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        # Input ids name an input to its container: unique per agent run is enough.
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        self._input_seq = itertools.count(1)
        manager.events = self

    # ------------------------------------------------------------ views

    def running(self) -> list[Running]:
        return list(self._running.values())

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        t = asyncio.create_task(coro, name=name)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _wake(self, key: tuple[str, str]) -> None:
        ev = self._changed.get(key)
        if ev is not None:
            ev.set()

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
        r.stop_timers()
        container.release(output.input_id)
        self._wake(container.key)
        self._spawn(self._complete(r, output.result), f"complete:{r.invoke.call_id}")

    def container_gone(self, container: Container) -> None:
        for r in [r for r in self._running.values() if r.container is container]:
            del self._running[r.input_id]
            r.stop_timers()
            container.release(r.input_id)
            self._spawn(self._release(r), f"release:{r.invoke.call_id}")
        self._wake(container.key)

    def container_init_failed(self, container: Container, failure: InitFailed) -> None:
        if not self._stopping:
            self._spawn(self._fail_inputs(container, failure), f"init-failed:{container.id}")

    # ------------------------------------------------------------ pulling

    def _ensure_puller(self, key: tuple[str, str]) -> None:
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

    def _puller_done(self, key: tuple[str, str], t: asyncio.Task[None]) -> None:
        if self._pullers.get(key) is t:
            del self._pullers[key]
        if not t.cancelled() and t.exception() is not None:
            log.error("puller crashed", exc_info=t.exception(), extra={"function": ".".join(key)})
        # A container may have become Ready while this puller was winding down.
        if self._m.ready(key):
            self._ensure_puller(key)

    async def _subscribe(self, key: tuple[str, str]) -> Any:
        app, fn = key
        durable = consumer_name(app, fn)
        # The gateway creates it at deploy; creating it here too makes the agent
        # work for inputs published by anyone before or without a gateway.
        await self._bus.ensure_consumer(
            INVOKE_STREAM, durable, filter_subject=invoke_subject(app, fn), ack_wait_s=ACK_WAIT_S
        )
        return await self._bus.js.pull_subscribe_bind(durable=durable, stream=INVOKE_STREAM)

    async def _pull(self, key: tuple[str, str]) -> None:
        changed = self._changed[key]
        psub: Any = None
        backoff = 0.1
        try:
            while not self._stopping:
                ready = self._m.ready(key)
                if not ready:
                    return
                free = sum(c.free_slots for c in ready) - self._claimed[key]
                if free <= 0:
                    changed.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(changed.wait(), 1.0)
                    continue
                try:
                    if psub is None:
                        psub = await self._subscribe(key)
                    msgs = await psub.fetch(min(free, MAX_FETCH), timeout=FETCH_TIMEOUT_S)
                except (TimeoutError, nats.errors.TimeoutError):
                    backoff = 0.1
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - the puller must outlive any fetch failure
                    log.warning("fetch failed", extra={"function": ".".join(key), "error": repr(e)})
                    if isinstance(e, nats.js.errors.APIError) and psub is not None:
                        with contextlib.suppress(Exception):
                            await psub.unsubscribe()
                        psub = None  # re-ensure the consumer: it may have been deleted
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.1
                for m in msgs:
                    self._claimed[key] += 1
                    self._spawn(self._take(key, m), f"input:{m.subject}")
        finally:
            if psub is not None:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()

    async def _take(self, key: tuple[str, str], msg: Msg) -> None:
        claimed = True

        def unclaim() -> None:
            nonlocal claimed
            if claimed:
                claimed = False
                self._claimed[key] -= 1
                self._wake(key)

        try:
            invoke = await self._admit(key, msg)
            if invoke is None:
                return
            ready = [c for c in self._m.ready(key) if c.free_slots > 0]
            if not ready:
                await _settle(msg.nak)  # our container went away meanwhile: someone else's turn
                return
            target = max(ready, key=lambda c: (c.free_slots, -len(c.inflight)))
            unclaim()
            await self._run(target, invoke, msg)
        except asyncio.CancelledError:
            await _settle(msg.nak)
            raise
        except Exception:
            log.exception("could not dispatch an input", extra={"subject": msg.subject})
            await _settle(msg.nak, delay=RETRY_ON_ERROR_S)
        finally:
            unclaim()

    async def _admit(self, key: tuple[str, str], msg: Msg) -> Invoke | None:
        """The input to run, or None when it was settled here (refused, cancelled,
        delayed or already done)."""
        data = msg.data
        if len(data) > MAX_INPUT_BYTES:
            await self._refuse(msg, "too_large", f"input of {len(data)} bytes")
            return None
        try:
            invoke: Invoke = self._invoke_decoder.decode(data)
        except msgspec.DecodeError as e:
            code = "unknown" if "`$.type`" in str(e) and "Invalid value" in str(e) else "malformed"
            await self._refuse(msg, code, f"invalid Invoke: {e}")
            return None
        if (invoke.app, invoke.function) != key:
            await self._refuse(
                msg,
                "malformed",
                f"Invoke for {invoke.app}.{invoke.function} published on {msg.subject}",
            )
            return None
        if not _CALL_ID.match(invoke.call_id):
            await self._refuse(msg, "malformed", f"invalid call_id {invoke.call_id!r}")
            return None
        if invoke.call_id in self._cancelled:
            await _settle(msg.ack)
            return None
        wait = invoke.not_before - time.time()
        if wait > 0.001:
            await _settle(msg.nak, delay=wait)
            return None
        if _num_delivered(msg) > 1 and await self._has_result(invoke.call_id):
            log.info("redelivered input already has a result", extra={"call_id": invoke.call_id})
            await _settle(msg.ack)
            return None
        return invoke

    async def _has_result(self, call_id: str) -> bool:
        try:
            await self._bus.js.get_last_msg(RESULTS_STREAM, result_subject(call_id))
        except nats.js.errors.NotFoundError:
            return False
        return True

    async def _refuse(self, msg: Msg, code: str, error: str) -> None:
        """Reject a malformed input; tell its caller when we can read who that is."""
        await self._reject(msg.subject, msg.data, code, error)
        call_id = ""
        with contextlib.suppress(Exception):
            call_id = self._call_id_decoder.decode(msg.data).call_id
        if call_id and _CALL_ID.match(call_id):
            failure = Result(
                call_id=call_id, status="failure", error=f"the agent refused the input: {error}"
            )
            try:
                await self._publish_result(failure)
            except Exception:
                # The caller would wait forever: keep the input and try again later.
                log.exception("could not publish the refusal", extra={"call_id": call_id})
                await _settle(msg.nak, delay=RETRY_ON_ERROR_S)
                return
        await _settle(msg.term)

    # ------------------------------------------------------------ running

    async def _run(self, container: Container, invoke: Invoke, msg: Msg) -> None:
        r = Running(f"{self._id_prefix}{next(self._input_seq)}", msg, invoke, container)
        container.assign(r.input_id)
        self._running[r.input_id] = r
        loop = asyncio.get_running_loop()
        r.keepalive = loop.call_later(IN_PROGRESS_EVERY_S, self._keep_alive, r)
        if container.spec.timeout_s > 0:  # 0: no limit
            r.timer = loop.call_later(container.spec.timeout_s, self._on_timeout, r.input_id)
        try:
            await container.send(RunInput(input_id=r.input_id, invoke=invoke))
        except Exception as e:  # noqa: BLE001 - any send failure means a broken connection
            # The connection broke: the container is dying and will say so.
            if self._running.pop(r.input_id, None) is not None:
                log.warning("could not hand over an input", extra={"error": repr(e)})
                r.stop_timers()
                container.release(r.input_id)
                await _settle(msg.nak)

    def _keep_alive(self, r: Running) -> None:
        """Tell JetStream the input is still being worked on, every few seconds
        while it runs (a timer, not a task per input: most inputs end first)."""
        if self._running.get(r.input_id) is not r:
            return
        self._spawn(_settle(r.msg.in_progress), f"in-progress:{r.invoke.call_id}")
        r.keepalive = asyncio.get_running_loop().call_later(
            IN_PROGRESS_EVERY_S, self._keep_alive, r
        )

    def _on_timeout(self, input_id: str) -> None:
        r = self._running.pop(input_id, None)
        if r is None:
            return
        r.stop_timers()
        c = r.container
        c.retire()  # no new input for it: it is about to be killed
        c.release(input_id)
        timeout = c.spec.timeout_s
        c.system_log(
            f"call {r.invoke.call_id} timed out after {timeout:g}s; replacing the container"
        )
        result = Result(
            call_id=r.invoke.call_id,
            status="timeout",
            error=f"{r.invoke.function} timed out after {timeout:g}s",
        )
        self._spawn(self._complete(r, result), f"timeout:{r.invoke.call_id}")
        self._spawn(
            self._m.replace(c, f"an input ran past its {timeout:g}s timeout"), f"replace:{c.id}"
        )

    async def _complete(self, r: Running, result: Result) -> None:
        """Store the outcome of one run (result or retry), then ack the input."""
        invoke = r.invoke
        try:
            if invoke.call_id in self._cancelled:
                await _settle(r.msg.ack)  # the gateway published "cancelled"
                return
            if result.status == "terminated":
                # The container stopped under the call (scale-down, agent
                # shutdown): not the call's doing, so it runs again elsewhere.
                await self._release(r)
                return
            result = msgspec.structs.replace(
                result,
                call_id=invoke.call_id,
                codec=invoke.codec,
                attempts=invoke.attempt,
                map_id=invoke.map_id,
                index=invoke.index,
                container_id=r.container.id,
                started_at=result.started_at or r.started_at,
            )
            policy = r.container.spec.retries
            if result.status in ("failure", "timeout") and invoke.attempt <= policy.max_retries:
                delay = policy.delay_s(invoke.attempt)
                retry = msgspec.structs.replace(
                    invoke, attempt=invoke.attempt + 1, not_before=time.time() + delay
                )
                await self._bus.publish(
                    invoke_subject(invoke.app, invoke.function),
                    retry,
                    msg_id=f"{invoke.call_id}:attempt:{retry.attempt}",
                )
                r.container.system_log(
                    f"call {invoke.call_id} attempt {invoke.attempt} ended with {result.status}"
                    f" ({result.error}); retrying in {delay:g}s"
                )
            else:
                await self._publish_result(result)
                metrics.call_finished(
                    invoke.app, invoke.function, result.status,
                    result.finished_at - result.started_at,
                )  # fmt: skip
            await _settle(r.msg.ack)
        except asyncio.CancelledError:
            await _settle(r.msg.nak)
            raise
        except Exception:
            log.exception(
                "could not store a result; the input will run again",
                extra={"call_id": invoke.call_id},
            )
            await _settle(r.msg.nak, delay=RETRY_ON_ERROR_S)

    async def _publish_result(self, result: Result) -> None:
        subject = result_subject(result.call_id)
        try:
            await self._bus.publish(subject, result, msg_id=result.call_id)
        except nats.errors.MaxPayloadError:
            size = len(result.value) + len(result.exc)
            limit = self._bus.nc.max_payload
            too_large = Result(
                call_id=result.call_id,
                status="failure",
                error=f"the result is too large to deliver: {size} bytes (the limit is {limit})",
                attempts=result.attempts,
                map_id=result.map_id,
                index=result.index,
                container_id=result.container_id,
                started_at=result.started_at,
            )
            await self._bus.publish(subject, too_large, msg_id=result.call_id)

    async def _release(self, r: Running) -> None:
        """The container under an input went away: let the input run elsewhere."""
        c = r.container
        crashed = c.state == "failed"
        if crashed and _num_delivered(r.msg) >= MAX_CRASH_DELIVERIES:
            failure = Result(
                call_id=r.invoke.call_id,
                status="failure",
                error=f"the container died while running this input, {MAX_CRASH_DELIVERIES} times"
                f" (last: {c.error})",
            )
            await self._complete(r, failure)
            return
        await _settle(r.msg.nak)

    async def _fail_inputs(self, container: Container, failure: InitFailed) -> None:
        """A container that cannot initialise fails what it is handed, so that
        callers see the error instead of waiting for a container that never comes."""
        key = container.key
        psub: Any = None
        try:
            psub = await self._subscribe(key)
            msgs = await psub.fetch(max(1, container.spec.max_inputs), timeout=INIT_FAILED_FETCH_S)
        except (TimeoutError, nats.errors.TimeoutError):
            return  # nobody is waiting: the failure shows in heartbeats only
        except Exception:
            log.exception("could not fetch inputs to fail", extra={"container_id": container.id})
            return
        finally:
            if psub is not None:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()
        error = f"the container failed to initialise: {failure.error}"
        for msg in msgs:
            try:
                invoke = await self._admit(key, msg)
            except Exception:  # noqa: BLE001 - redelivered later; the others go on
                await _settle(msg.nak, delay=RETRY_ON_ERROR_S)
                continue
            if invoke is None:
                continue
            result = Result(
                call_id=invoke.call_id,
                status="failure",
                error=error,
                traceback=failure.traceback,
                exc=failure.exc,
            )
            await self._complete(Running("", msg, invoke, container), result)

    # ------------------------------------------------------------ cancellation

    async def on_cancel(self, msg: Msg) -> None:
        """Handler of ``thaw.cancel.*`` (core NATS)."""
        try:
            cancel: CancelCall = self._cancel_decoder.decode(msg.data)
        except msgspec.DecodeError as e:
            await self._reject(msg.subject, msg.data, "malformed", f"invalid CancelCall: {e}")
            return
        call_id = cancel.call_id
        self._cancelled[call_id] = time.time()
        self._cancelled.move_to_end(call_id)
        horizon = time.time() - CANCELLED_TTL_S
        while self._cancelled and (
            len(self._cancelled) > CANCELLED_MEMORY
            or next(iter(self._cancelled.values())) < horizon
        ):
            self._cancelled.popitem(last=False)
        for r in [r for r in self._running.values() if r.invoke.call_id == call_id]:
            c = r.container
            if cancel.terminate_containers:
                del self._running[r.input_id]
                r.stop_timers()
                c.retire()
                c.release(r.input_id)
                self._spawn(_settle(r.msg.ack), f"ack:{call_id}")
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


async def _settle(op: Callable[..., Awaitable[None]], **kw: float) -> None:
    """ack/nak/term, logging instead of raising: a lost ack only means a
    redelivery, which the result check absorbs."""
    try:
        await op(**kw)
    except Exception as e:  # noqa: BLE001 - see docstring
        log.warning("could not settle an input", extra={"error": repr(e)})


def _num_delivered(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # noqa: BLE001 - only a guess for old servers
        return 1
