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
- ``flush_build_logs``: publishes the running builds' buffered output
  (``reporter.py``).

A request that does not decode is refused (``reject``: an ErrorEvent); when
its build id can still be read, a failed ``BuildResult`` tells the requester
why, so nobody waits for a result that will never come.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec
from thaw_core import contract, metrics
from thaw_core.bus import Msg, num_delivered
from thaw_core.schema import (
    NAME_RE,
    BuildRequest,
    BuildResult,
    ImageLookup,
    ImageLookupReply,
    encode,
)
from thaw_core.service import MAX_PAYLOAD_BYTES, Service, error_code, term

from thaw_builder.build import Builder
from thaw_builder.catalog import Catalog
from thaw_builder.config import BuilderConfig
from thaw_builder.messages import salvage_build_id
from thaw_builder.pipconf import PipSettings
from thaw_builder.reporter import BuildLogs
from thaw_builder.secrets import BusSecrets

STREAM = contract.BUILD_STREAM.name
DURABLE = "builder"
# A build may take long: tell JetStream it is alive well within ack_wait.
ACK_WAIT_S = 60.0
IN_PROGRESS_EVERY_S = 15.0
# A request whose handling kills the builder process this often is given up.
MAX_DELIVER = 5

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
            catalog=Catalog(self.db),
            blob=self.blob,
            config=self.config,
            pip=pip,
            secrets=BusSecrets(self.bus),
        )
        await self.builder.recover()
        self._requests = msgspec.json.Decoder(BuildRequest)
        self._lookups = msgspec.json.Decoder(ImageLookup)
        self.logs = BuildLogs(self.bus)
        await self.bus.ensure_consumer(
            STREAM,
            DURABLE,
            filter_subject=contract.BUILD_REQUEST,
            ack_wait_s=ACK_WAIT_S,
            max_deliver=MAX_DELIVER,
        )

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.consume_requests, self.serve_lookups, self.flush_build_logs]

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
        log.info(
            "build started",
            extra={"build_id": request.build_id, "requested_by": request.requested_by},
        )
        started = time.monotonic()
        try:
            async with self.logs.reporting(request.build_id) as reporter:
                result = await self.builder.build(request, reporter)
        except Exception as e:
            # The catalog or blob store failing under us: retried (nak) while
            # deliveries remain, then the requester is told rather than left waiting.
            delivered = num_delivered(msg)
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
        metrics.BUILDS.labels("ok" if result.ok else "failed").inc()
        metrics.BUILD_SECONDS.observe(time.monotonic() - started)
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

    async def flush_build_logs(self) -> None:
        await self.logs.run(self.stopping)

    # ------------------------------------------------------------ lookups

    async def serve_lookups(self) -> None:
        await self.serve_until_stopping(
            contract.IMAGE_LOOKUP, self.on_lookup, queue=contract.IMAGE_LOOKUP
        )

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

