"""The builder service's lifecycle. Image builds: content-addressed layers in the blob store.

Loops:

- ``consume_requests``: ``BuildRequest`` from ``thaw.build.request`` (JetStream
  BUILD, durable ``builder``), up to ``THAW_BUILDER_CONCURRENCY`` at once.
  Progress and output go to ``thaw.build.log.<build_id>``, the ``BuildResult``
  to ``thaw.build.result.<build_id>``; the request is acked only after its
  result is stored, so a builder that dies mid-build leaves it to be
  redelivered (and the rebuild reuses every layer already made).
- ``serve_lookups``: ``ImageLookup`` -> ``ImageLookupReply`` on
  ``thaw.builder.lookup`` (is this image built, and its manifest).

A request that does not decode is refused (``reject``: an ErrorEvent); when
its build id can still be read, a failed ``BuildResult`` tells the requester
why, so nobody waits for a result that will never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import msgspec
from thaw_core import contract
from thaw_core.bus import Bus, Msg
from thaw_core.schema import (
    NAME_RE,
    BuildOutput,
    BuildProgress,
    BuildRequest,
    BuildResult,
    ImageLookup,
    ImageLookupReply,
    StepStatus,
    encode,
)
from thaw_core.service import MAX_PAYLOAD_BYTES, Service, error_code, term

from thaw_builder.build import Builder
from thaw_builder.catalog import Catalog
from thaw_builder.config import BuilderConfig
from thaw_builder.messages import salvage_build_id
from thaw_builder.pipconf import PipSettings
from thaw_builder.plan import PlannedStep

STREAM = "BUILD"
DURABLE = "builder"
# A build may take long: tell JetStream it is alive well within ack_wait.
ACK_WAIT_S = 60.0
IN_PROGRESS_EVERY_S = 15.0
# A request whose handling kills the builder process this often is given up.
MAX_DELIVER = 5
# Output is published in batches: at most this often, or this many lines.
OUTPUT_FLUSH_S = 0.25
OUTPUT_BATCH_LINES = 200

log = logging.getLogger(__name__)


class BuilderService(Service):
    name = "builder"
    uses_db = True
    uses_blob = True

    builder: Builder
    config: BuilderConfig

    async def setup(self) -> None:
        assert self.db is not None and self.blob is not None
        self.config = BuilderConfig.from_env(self.settings)
        pip = await asyncio.to_thread(PipSettings.from_host)
        self.builder = Builder(
            catalog=Catalog(self.db), blob=self.blob, config=self.config, pip=pip
        )
        await self.builder.recover()
        self._requests = msgspec.json.Decoder(BuildRequest)
        self._lookups = msgspec.json.Decoder(ImageLookup)
        await self.bus.ensure_consumer(
            STREAM,
            DURABLE,
            filter_subject=contract.BUILD_REQUEST,
            ack_wait_s=ACK_WAIT_S,
            max_deliver=MAX_DELIVER,
        )

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.consume_requests, self.serve_lookups]

    # ------------------------------------------------------------ builds

    async def consume_requests(self) -> None:
        await self.bus.consume(
            STREAM,
            DURABLE,
            self.on_request,
            batch=1,
            stop=self.stopping,
            max_concurrency=self.config.concurrency,
            in_progress_every_s=IN_PROGRESS_EVERY_S,
        )

    async def on_request(self, msg: Msg) -> None:
        request = await self._decode_request(msg)
        if request is None:
            return
        reporter = BusReporter(self.bus, request.build_id)
        log.info(
            "build started",
            extra={"build_id": request.build_id, "requested_by": request.requested_by},
        )
        try:
            async with reporter.running():
                result = await self.builder.build(request, reporter)
        except Exception as e:
            # The catalog or blob store failing under us: retried (nak) while
            # deliveries remain, then the requester is told rather than left waiting.
            delivered = _num_delivered(msg)
            if delivered < MAX_DELIVER:
                raise
            log.exception("build %s failed %d times; giving up", request.build_id, delivered)
            result = BuildResult(
                build_id=request.build_id,
                ok=False,
                error=f"internal error after {delivered} attempts: {type(e).__name__}: {e}",
            )
        log.info(
            "build finished",
            extra={
                "build_id": request.build_id,
                "ok": result.ok,
                "image_id": result.image_id,
                "built_steps": result.built_steps,
                "cached_steps": result.cached_steps,
                "error": result.error,
            },
        )
        await self._publish_result(result)

    async def _decode_request(self, msg: Msg) -> BuildRequest | None:
        data: bytes = msg.data
        if len(data) > MAX_PAYLOAD_BYTES:
            error, code = f"build request of {len(data)} bytes is too large", "too_large"
        else:
            try:
                request = self._requests.decode(data)
            except msgspec.DecodeError as e:
                error, code = f"build request does not decode: {e}", error_code(e)
            else:
                if NAME_RE.match(request.build_id):
                    return request
                code = "malformed"
                error = (
                    f"invalid build_id {request.build_id!r}: use letters, digits, '_' and '-' "
                    "(at most 63)"
                )
        await self.reject(msg.subject, data, code, error)
        build_id = salvage_build_id(data) if code != "too_large" else ""
        if NAME_RE.match(build_id):
            await self._publish_result(BuildResult(build_id=build_id, ok=False, error=error))
        await term(msg)
        return None

    async def _publish_result(self, result: BuildResult) -> None:
        # msg-id: a request redelivered after its result was stored (the
        # builder died before acking) does not store a second one.
        await self.bus.publish(
            contract.build_result_subject(result.build_id),
            encode(result),
            msg_id=contract.build_result_msg_id(result.build_id),
        )

    # ------------------------------------------------------------ lookups

    async def serve_lookups(self) -> None:
        sub = await self.bus.serve(
            contract.IMAGE_LOOKUP, self.on_lookup, queue=contract.IMAGE_LOOKUP
        )
        try:
            await self.stopping.wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def on_lookup(self, msg: Msg) -> None:
        query = await self.decode(msg, self._lookups)
        if query is None:
            reply = ImageLookupReply(
                image_id="",
                built=False,
                error="malformed ImageLookup (see thaw.event.error.builder)",
            )
        else:
            reply = await self.builder.lookup(query)
        if msg.reply:
            await msg.respond(encode(reply))


class BusReporter:
    """A build's progress and output on ``thaw.build.log.<build_id>``.

    Output lines are buffered and published in batches (``BuildOutput``),
    always before the next progress message, so a reader sees them in order.
    Publishing failures are logged, never raised: a lost log line must not
    fail a build.
    """

    def __init__(self, bus: Bus, build_id: str) -> None:
        self.bus = bus
        self.build_id = build_id
        self.subject = contract.build_log_subject(build_id)
        self._pending: list[tuple[int, str, str]] = []
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BusReporter]:
        flusher = asyncio.create_task(self._flush_loop())
        try:
            yield self
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await self.flush()

    async def progress(
        self, step: PlannedStep, status: StepStatus, *, elapsed_s: float = 0.0
    ) -> None:
        msg = BuildProgress(
            build_id=self.build_id,
            step=step.index,
            op=step.op,
            status=status,
            layer_id=step.layer_id,
            elapsed_s=elapsed_s,
        )
        async with self._lock:
            await self._flush_locked()
            await self._publish(msg)

    def output(self, step: int, stream: str, line: str) -> None:
        self._pending.append((step, stream, line))
        if len(self._pending) >= OUTPUT_BATCH_LINES:
            self._wake.set()

    async def flush(self) -> None:
        async with self._lock:
            await self._flush_locked()

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), OUTPUT_FLUSH_S)
            self._wake.clear()
            await self.flush()

    async def _flush_locked(self) -> None:
        pending, self._pending = self._pending, []
        batch: list[str] = []
        key: tuple[int, str] | None = None
        for step, stream, line in pending:
            if key is not None and (step, stream) != key:
                await self._publish_lines(key, batch)
                batch = []
            key = (step, stream)
            batch.append(line)
        if key is not None and batch:
            await self._publish_lines(key, batch)

    async def _publish_lines(self, key: tuple[int, str], lines: list[str]) -> None:
        step, stream = key
        await self._publish(
            BuildOutput(
                build_id=self.build_id, step=step, stream=stream, lines=lines, at=time.time()
            )  # type: ignore[arg-type]
        )

    async def _publish(self, msg: BuildProgress | BuildOutput) -> None:
        try:
            await self.bus.publish(self.subject, encode(msg))
        except Exception as e:  # noqa: BLE001 - see the class docstring
            log.warning("could not publish build log for %s: %r", self.build_id, e)


def _num_delivered(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # noqa: BLE001 - not a JetStream message: a single delivery
        return MAX_DELIVER
