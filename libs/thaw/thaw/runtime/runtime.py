"""One container's life, as the agent sees it (``thaw_core.container_protocol``)::

    connect <- Configure -> Hello -> load, enter hooks -> Ready | InitFailed
    RunInput -> Output (up to max_inputs at once), CancelInput, Shutdown

``Configure``, the agent's first frame on every connection, names the
container and carries its environment: it is applied to ``os.environ``
before anything of the user's is loaded.

Modelled on temporalio's Worker: ``run()`` is the whole life, ``shutdown()``
asks it to end gracefully. The event loop (main thread) runs the life (start,
Ready, drain, exit hooks), async inputs and everything that waits.

The agent's frames are read by *reader threads*, leader/follower style: one
thread at a time holds the read lock and blocks on the socket. A thread that
reads a sync input whose instance is ready takes a slot, lets go of the lock
(the next reader takes over) and runs the input itself: read, run and reply
on one thread, with no hand-off to or from the loop (each costs ~0.1 ms
here). Every other frame is handed to the loop *while the lock is held*, so
that the loop sees frames in the order the agent sent them. There are
max_inputs + 1 readers once Ready, so one is always reading: a cancel, a
shutdown or the agent's going away is seen at once, whatever runs.

The agent's going away ends ``run()`` at once, whatever the life is doing:
nothing may run unsupervised.

Memory snapshots (``THAW_SNAPSHOT=1``): between the ``enter(snap=True)`` and
``enter(snap=False)`` hooks the runtime says ``SnapshotReady``, closes its
connection on purpose (its readers end quietly), waits for the agent's
socket to reappear, then takes the container id and env of the agent's
``Configure``, reseeds the random generators and says ``Hello`` again.
Whatever CRIU restores from that point on, in however many containers,
starts there.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable

import msgspec
from thaw_core.container_protocol import (
    CancelInput,
    ChannelClosed,
    Configure,
    Frame,
    Hello,
    InitFailed,
    Output,
    Ready,
    RunInput,
    Shutdown,
    SnapshotReady,
    StoreAnswer,
    VolumeAnswer,
    WebBody,
    WebSent,
    WebSocketReceive,
)
from thaw_core.contract import ENV_CONTAINER_ID
from thaw_core.schema import CallStatus

from thaw.runtime.channel import AgentChannel
from thaw.runtime.env import RuntimeEnv
from thaw.runtime.executor import Callee, Executor, our_cancellation, outcome
from thaw.runtime.failure import describe
from thaw.runtime.log import log
from thaw.runtime.reseed import reseed_generators
from thaw.runtime.slots import Slots
from thaw.runtime.store_calls import calls as store_calls
from thaw.runtime.target import Target, load_target
from thaw.runtime.tracing import span_of
from thaw.runtime.volume_calls import calls as volume_calls
from thaw.runtime.web import WebInputs

DEFAULT_GRACE_S = Shutdown().grace_s
# How often a shutdown looks whether the running inputs are done.
DRAIN_POLL_S = 0.01


class _Input:
    __slots__ = ("call_id", "on_reader", "received_at", "task", "traceparent")

    def __init__(
        self,
        run: RunInput,
        received_at: float,
        task: asyncio.Task[None] | None = None,
        on_reader: bool = False,
    ) -> None:
        self.received_at = received_at
        self.task = task  # inputs served from the loop
        self.on_reader = on_reader  # inputs a reader thread runs, holding a slot until answered
        self.call_id = run.call_id
        self.traceparent = run.traceparent

    def answer(self, output: Output) -> Output:
        """``output`` with this input's trace span, when it was traced."""
        if not self.traceparent:
            return output
        span = span_of(self.traceparent, self.received_at, output, self.call_id)
        return output if span is None else msgspec.structs.replace(output, span=span)


class Runtime:
    def __init__(self, env: RuntimeEnv) -> None:
        self._env = env
        self._loop: asyncio.AbstractEventLoop
        self._channel: AgentChannel
        self._executor: Executor
        self._target: Target
        self._web: WebInputs
        self._slots: Slots
        self._max_inputs = 1
        # Input id -> the input running or waiting for a slot. Whoever removes
        # an input from here (dict.pop is atomic, from any thread) answers for
        # it: the input itself when it finishes, a cancel, or the end of a
        # shutdown's grace period.
        self._inflight: dict[str, _Input] = {}
        self._read_lock = threading.Lock()
        self._readers: list[threading.Thread] = []
        self._on_readers = False  # set once Ready: readers may run sync inputs
        self._agent_gone = False
        # Set while we close the connection ourselves for a memory snapshot:
        # the readers end quietly then, the runtime does not.
        self._pausing = False
        self._gone = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._grace_s = DEFAULT_GRACE_S

    def shutdown(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Stop taking inputs, give running ones ``grace_s`` to finish, run
        the exit hooks, and make ``run()`` return 0. On the loop's thread."""
        if not self._stopping.is_set():
            self._grace_s = grace_s
            self._stopping.set()

    async def run(self) -> int:
        """The container's life; returns the process's exit code."""
        self._loop = asyncio.get_running_loop()
        self._slots = Slots(self._loop)
        try:
            self._channel = await asyncio.to_thread(AgentChannel.connect, self._env.socket_path)
            await self._configure(self._channel)
            self._say_hello(self._channel)
        except (ConnectionError, msgspec.DecodeError, TypeError) as e:
            log.error("%s", e)
            return 1
        self._add_readers(1)  # during start too: a Shutdown or the agent's loss ends it
        life = asyncio.create_task(self._live(), name="thaw-runtime-life")
        gone = asyncio.create_task(self._gone.wait())
        await asyncio.wait({life, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not life.done():
            log.error("the agent closed its connection: exiting")
            return 1
        gone.cancel()
        self._agent_gone = True  # from here on, the end of the connection is ours
        self._channel.close()
        return life.result()

    # ------------------------------------------------------------ life

    async def _live(self) -> int:
        start = asyncio.create_task(self._start())
        stop = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not start.done():
            # Asked to stop while loading: nothing ran yet, nothing to drain.
            start.cancel()
            log.info("stopped before the container was ready")
            return 0
        if not start.result():
            return 1
        if self._target.runs_in_threads:
            self._add_readers(self._max_inputs)
        self._on_readers = True
        self._slots.open(self._max_inputs)
        self._channel.send(Ready(max_inputs=self._max_inputs))
        self._ready.set()
        await self._stopping.wait()
        await self._drain()
        await self._target.exit()
        return 0

    async def _start(self) -> bool:
        """Load the target and run its enter hooks; on failure, tell the agent."""
        try:
            spec = self._env.spec()
            self._max_inputs = spec.max_inputs
            self._executor = Executor(spec.max_inputs, self._loop)
            self._target = load_target(spec, self._executor)
            # The channel changes across a snapshot: look it up per frame.
            self._web = WebInputs(spec, self._executor, lambda frame: self._channel.send(frame))
            self._web.check()
            await self._target.enter(snap=True)
            if self._env.snapshot:
                # What ran above is captured in the snapshot; what runs below
                # runs again after every restore.
                await self._pause_for_snapshot()
            await self._target.enter(snap=False)
            return True
        except BaseException as e:  # SystemExit at import fails the start, with its reason
            if our_cancellation(e):
                raise
            failure = describe(e)
            log.error("the container failed to start:\n%s", failure.traceback.rstrip())
            self._channel.send(
                InitFailed(error=failure.error, traceback=failure.traceback, exc=failure.exc)
            )
            return False

    async def _pause_for_snapshot(self) -> None:
        """Say SnapshotReady, let go of the agent, wait to be checkpointed and
        brought back (restored, or resumed when the checkpoint failed), then
        take on the identity the agent hands over."""
        self._pausing = True
        self._channel.send(SnapshotReady())
        self._channel.close()
        for reader in self._readers:
            await asyncio.to_thread(reader.join)
        self._readers.clear()
        log.info("ready for a memory snapshot")
        channel = await asyncio.to_thread(AgentChannel.await_agent, self._env.socket_path)
        configure = await self._configure(channel)
        reseeded = reseed_generators()
        self._channel = channel
        self._pausing = False
        self._say_hello(channel)
        self._add_readers(1)
        how = "restored" if configure.restored else "resumed"
        log.info("%s as %s; reseeded %s", how, configure.container_id, ", ".join(reseeded))

    async def _configure(self, channel: AgentChannel) -> Configure:
        """Read the agent's first frame on ``channel`` and take on the
        identity and environment it gives."""
        first = await asyncio.to_thread(channel.read)
        if not isinstance(first, Configure):
            raise TypeError(f"expected Configure first, got {type(first).__name__}")
        os.environ.update(first.env)
        os.environ[ENV_CONTAINER_ID] = first.container_id  # what user code may read
        self._env = RuntimeEnv.from_environ()
        volume_calls.attach(channel, self._env)
        store_calls.attach(channel)
        return first

    def _say_hello(self, channel: AgentChannel) -> None:
        channel.send(Hello(container_id=self._env.container_id, pid=os.getpid()))

    async def _drain(self) -> None:
        deadline = self._loop.time() + self._grace_s
        while self._inflight and self._loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        for input_id in list(self._inflight):
            self._end_input(
                input_id,
                "terminated",
                f"the container stopped before the call finished (grace period {self._grace_s:g} s)",
            )

    # ------------------------------------------------------------ reader threads

    def _add_readers(self, count: int) -> None:
        for _ in range(count):
            thread = threading.Thread(
                target=self._read_frames, name=f"thaw-reader-{len(self._readers)}", daemon=True
            )
            self._readers.append(thread)
            thread.start()

    def _read_frames(self) -> None:
        """A reader thread: read a frame, route it, run what it got, again."""
        while True:
            with self._read_lock:
                if self._agent_gone:
                    return
                try:
                    frame = self._channel.read()
                except msgspec.DecodeError as e:
                    # The length prefix kept the stream in step: skip just this frame.
                    log.error("ignored a frame from the agent that does not decode: %s", e)
                    continue
                except ChannelClosed as e:
                    if self._pausing:
                        return  # we closed it for a snapshot; a new one comes
                    if not self._agent_gone:
                        self._agent_gone = True
                        log.error("%s", e)
                        self._loop.call_soon_threadsafe(self._gone.set)
                    return
                run_here = self._route(frame)
            if run_here is not None:
                try:
                    run_here()
                except Exception:  # noqa: BLE001 - a bug of ours must not cost a reader
                    log.exception("a reader thread failed to run an input")

    def _route(self, frame: object) -> Callable[[], None] | None:
        """Under the read lock: hand ``frame`` to the loop, or return the
        input this thread is to run itself."""
        match frame:
            case RunInput():
                if (run_here := self._claim(frame)) is not None:
                    return run_here
                self._loop.call_soon_threadsafe(self._accept, frame)
            case WebBody() | WebSent() | WebSocketReceive():
                self._loop.call_soon_threadsafe(self._web.answer, frame)
            case CancelInput(input_id=input_id):
                self._loop.call_soon_threadsafe(self._cancel, input_id)
            case Shutdown(grace_s=grace_s):
                self._loop.call_soon_threadsafe(self.shutdown, grace_s)
            case VolumeAnswer():
                volume_calls.answer(frame)
            case StoreAnswer():
                store_calls.answer(frame)
        return None

    def _claim(self, run: RunInput) -> Callable[[], None] | None:
        """The input as this thread's to run: a sync callable, nothing to build
        first, a free slot, and no shutdown under way."""
        if (
            not self._on_readers
            or self._stopping.is_set()
            or run.input_id in self._inflight
            or run.web is not None  # served on the loop
        ):
            return None
        bound = self._target.bind_now(run)
        if bound is None or bound[0].on_loop or not self._slots.try_acquire():
            return None
        self._inflight[run.input_id] = _Input(run, time.time(), on_reader=True)
        return functools.partial(self._run_on_reader, run, *bound)

    def _run_on_reader(self, run: RunInput, target: Callee, instance: object | None) -> None:
        self._executor.run_here(run, target, instance, self._reply)

    # ------------------------------------------------------------ answers (any thread)

    def _reply(self, output: Output, ahead: Frame | None = None) -> None:
        """Answer an input; ``ahead``: a frame to send before, in the same write
        (a web response's last part: one write, and one wake-up of the agent, less)."""
        item = self._inflight.pop(output.input_id, None)
        if item is None:
            if ahead is not None:
                self._channel.send(ahead)  # the client still gets all of its answer
            return  # cancelled or terminated meanwhile: that answer went out
        store_calls.input_ended(output.status == "success")
        answer = item.answer(output)
        self._channel.send(*((answer,) if ahead is None else (ahead, answer)))
        if item.on_reader:
            self._slots.release()

    def _end_input(self, input_id: str, status: CallStatus, error: str) -> None:
        """Answer for an input that will not finish (cancel, shutdown); its
        own result, if it ever comes, is dropped."""
        item = self._inflight.pop(input_id, None)
        if item is None:
            return  # finished already: its result went out
        if item.task is not None:
            item.task.cancel()  # an async input stops at its next await
        # A sync one cannot be stopped: its thread runs on. Its slot is free
        # again now, as the agent will consider it.
        self._channel.send(item.answer(outcome(input_id, status, item.received_at, error=error)))
        if item.on_reader:
            self._slots.release()
            # That thread was one of the readers: replace it, so that one is
            # always left to read while every slot runs.
            self._add_readers(1)

    # ------------------------------------------------------------ the loop's inputs

    def _accept(self, run: RunInput) -> None:
        received_at = time.time()
        if self._stopping.is_set():
            self._channel.send(
                outcome(
                    run.input_id,
                    "terminated",
                    received_at,
                    error="the container is shutting down",
                )
            )
            return
        if run.input_id in self._inflight:
            log.error("ignored a second input with id %s while the first runs", run.input_id)
            return
        task = asyncio.create_task(self._serve(run))
        self._inflight[run.input_id] = _Input(run, received_at, task=task)

    def _cancel(self, input_id: str) -> None:
        self._end_input(input_id, "cancelled", "the call was cancelled")

    async def _serve(self, run: RunInput) -> None:
        try:
            if not self._ready.is_set():
                await self._ready.wait()
            await self._slots.acquire()
            try:
                await self._execute(run)
            finally:
                self._slots.release()
        except asyncio.CancelledError:
            pass  # whoever cancelled it answered for it

    async def _execute(self, run: RunInput) -> None:
        started_at = time.time()
        try:
            target, instance = await self._target.bind(run)
            if run.web is not None:
                self._reply(*await self._web.serve(run, target, instance))
                return
            await self._executor.run(run, target, instance, self._reply)
        except BaseException as e:  # a failing enter hook, an unknown method, a bug of ours
            if our_cancellation(e):
                raise
            self._reply(self._executor.failure(run, e, started_at))
