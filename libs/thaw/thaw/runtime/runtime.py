"""One container's life, as the agent sees it (``thaw_core.container_protocol``)::

    connect -> Hello -> load, enter hooks -> Ready | InitFailed
    RunInput -> Output (up to max_inputs at once), CancelInput, Shutdown

Modelled on temporalio's Worker: ``run()`` is the whole life, ``shutdown()``
asks it to end gracefully. Two tasks make it up: the reader, which only
dispatches the agent's frames, and the life (start, serve, drain, exit hooks).
The agent's going away ends ``run()`` at once, whatever the life is doing:
nothing may run unsupervised.
"""

from __future__ import annotations

import asyncio
import os
import time

import msgspec
from thaw_core.container_protocol import (
    CancelInput,
    Hello,
    InitFailed,
    Output,
    Ready,
    RunInput,
    Shutdown,
)
from thaw_core.schema import CallStatus, Invoke, Result

from thaw.runtime.channel import AgentChannel
from thaw.runtime.env import RuntimeEnv
from thaw.runtime.executor import Executor, Reply, our_cancellation, result_for
from thaw.runtime.failure import describe
from thaw.runtime.log import log
from thaw.runtime.target import Target, load_target

DEFAULT_GRACE_S = Shutdown().grace_s


class _Input:
    __slots__ = ("invoke", "received_at", "task")

    def __init__(self, invoke: Invoke, task: asyncio.Task[None], received_at: float) -> None:
        self.invoke = invoke
        self.task = task
        self.received_at = received_at


class Runtime:
    def __init__(self, env: RuntimeEnv) -> None:
        self._env = env
        self._channel: AgentChannel
        self._executor: Executor
        self._target: Target
        self._slots: asyncio.Semaphore
        self._max_inputs = 1
        # Input id -> the input running or waiting for a slot. Whoever removes
        # an input from here answers for it: the input itself when it
        # finishes (possibly in a worker thread: dict.pop is atomic), a
        # cancel, or the end of a shutdown's grace period.
        self._inflight: dict[str, _Input] = {}
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._grace_s = DEFAULT_GRACE_S

    def shutdown(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Stop taking inputs, give running ones ``grace_s`` to finish, run
        the exit hooks, and make ``run()`` return 0."""
        if not self._stopping.is_set():
            self._grace_s = grace_s
            self._stopping.set()

    async def run(self) -> int:
        """The container's life; returns the process's exit code."""
        try:
            self._channel = await AgentChannel.connect(self._env.socket_path)
        except ConnectionError as e:
            log.error("%s", e)
            return 1
        self._channel.send(Hello(container_id=self._env.container_id, pid=os.getpid()))
        reader = asyncio.create_task(self._read_frames(), name="thaw-agent-reader")
        life = asyncio.create_task(self._live(), name="thaw-runtime-life")
        await asyncio.wait({reader, life}, return_when=asyncio.FIRST_COMPLETED)
        if not life.done():
            log.error("the agent closed its connection: exiting")
            return 1
        reader.cancel()
        await self._channel.close()
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
            self._slots = asyncio.Semaphore(spec.max_inputs)
            self._executor = Executor(self._env.container_id, spec.max_inputs)
            self._target = load_target(spec, self._executor)
            await self._target.enter(snap=True)
            # The memory snapshot goes here (snapshot issue): what ran above is
            # captured in it; what runs below runs again after every restore.
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

    async def _drain(self) -> None:
        running = [i.task for i in list(self._inflight.values())]
        if running:
            await asyncio.wait(running, timeout=self._grace_s)
        for input_id in list(self._inflight):
            item = self._inflight.pop(input_id, None)
            if item is None:
                continue  # answered meanwhile by its worker thread
            item.task.cancel()
            self._answer(
                input_id,
                item.invoke,
                "terminated",
                f"the container stopped before the call finished (grace period {self._grace_s:g} s)",
                item.received_at,
            )

    # ------------------------------------------------------------ frames

    async def _read_frames(self) -> None:
        """Returns when the agent is gone."""
        while True:
            try:
                frame = await self._channel.read()
            except msgspec.DecodeError as e:
                # The length prefix kept the stream in step: skip just this frame.
                log.error("ignored a frame from the agent that does not decode: %s", e)
                continue
            except (ConnectionError, EOFError, OSError, ValueError) as e:
                log.error("the agent connection broke: %s", e)
                return
            match frame:
                case None:
                    return
                case RunInput():
                    self._accept(frame)
                case CancelInput(input_id=input_id):
                    self._cancel(input_id)
                case Shutdown(grace_s=grace_s):
                    self.shutdown(grace_s)

    def _accept(self, run: RunInput) -> None:
        received_at = time.time()
        if self._stopping.is_set():
            self._answer(
                run.input_id,
                run.invoke,
                "terminated",
                "the container is shutting down",
                received_at,
            )
            return
        if run.input_id in self._inflight:
            log.error("ignored a second input with id %s while the first runs", run.input_id)
            return
        task = asyncio.create_task(self._serve(run))
        self._inflight[run.input_id] = _Input(run.invoke, task, received_at)

    def _cancel(self, input_id: str) -> None:
        item = self._inflight.pop(input_id, None)
        if item is None:
            return  # finished already: its result went out
        # An async input stops at its next await; a sync one cannot be stopped,
        # so its thread runs on and what it returns is dropped.
        item.task.cancel()
        self._answer(input_id, item.invoke, "cancelled", "the call was cancelled", item.received_at)

    def _answer(
        self, input_id: str, invoke: Invoke, status: CallStatus, error: str, started_at: float
    ) -> None:
        result = result_for(invoke, self._env.container_id, status, started_at, error=error)
        self._channel.send(Output(input_id=input_id, result=result))

    # ------------------------------------------------------------ inputs

    async def _serve(self, run: RunInput) -> None:
        def reply(result: Result) -> None:  # from the loop or a worker thread
            if self._inflight.pop(run.input_id, None) is not None:
                self._channel.send(Output(input_id=run.input_id, result=result))

        try:
            if not self._ready.is_set():
                await self._ready.wait()
            async with self._slots:
                await self._execute(run.invoke, reply)
        except asyncio.CancelledError:
            pass  # whoever cancelled it answered for it

    async def _execute(self, invoke: Invoke, reply: Reply) -> None:
        started_at = time.time()
        try:
            target, instance = await self._target.bind(invoke)
            await self._executor.run(invoke, target, instance, reply)
        except BaseException as e:  # a failing enter hook, an unknown method, a bug of ours
            if our_cancellation(e):
                raise
            reply(self._executor.failure(invoke, e, started_at))
