"""The bus against a real nats-server: what an agent, the gateway or an
operator would check — inputs are redelivered until handled and then never
again, results are stored once per call id, request/reply survives a failing
handler, a consume loop survives a NATS restart, and traces cross the bus."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
import pytest
from fixtures.nats import NatsServer
from fixtures.wait import eventually
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from thaw_core import contract, schema
from thaw_core.bus import BatchPublishError, Bus, BusRequestError, Msg, refusal, trace_context


def uid() -> str:
    return uuid.uuid4().hex[:12]


async def until(
    measure: Callable[[], Awaitable[int]], want: int, timeout_s: float = 10.0, what: str = ""
) -> None:
    """Until ``measure()`` reaches ``want`` (at least ``want``, for a positive one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await measure()
        if (got >= want > 0) or got == want:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}: {got}")
        await asyncio.sleep(0.02)


async def stored(bus: Bus, subject: str) -> int:
    """Messages the stream still holds on ``subject``."""
    return await bus.stored_count(subject)


async def unsettled(bus: Bus, stream: str, durable: str) -> int:
    info = await bus.js.consumer_info(stream, durable)
    return (info.num_pending or 0) + (info.num_ack_pending or 0)


async def waiting_pulls(bus: Bus, durable: str) -> int:
    """Pull requests the server holds for ``durable``: its loop is fetching."""
    return (await bus.js.consumer_info("INVOKE", durable)).num_waiting or 0


class Loop:
    """A consume loop run as a task for the length of a test."""

    def __init__(
        self,
        bus: Bus,
        stream: str,
        durable: str,
        handler: Callable[[Msg], Awaitable[None]],
        **kw: object,
    ) -> None:
        self.stop = asyncio.Event()
        # A short fetch timeout: stop is noticed between fetches, so this is
        # how long close() takes.
        kw.setdefault("fetch_timeout_s", 0.25)
        self.task = asyncio.create_task(
            bus.consume(stream, durable, handler, stop=self.stop, **kw)  # type: ignore[arg-type]
        )

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 5)


async def invoke_consumer(bus: Bus, *, ack_wait_s: float = 30) -> tuple[str, str]:
    """A fresh function: its INVOKE subject and durable consumer."""
    app, fn = f"t{uid()}", "fn"
    subject = f"thaw.invoke.{app}.{fn}"
    durable = f"{app}-{fn}"
    await bus.ensure_consumer("INVOKE", durable, filter_subject=subject, ack_wait_s=ack_wait_s)
    return subject, durable


async def test_provision_and_ensure_consumer_are_idempotent(bus: Bus) -> None:
    await bus.provision()  # the fixture provisioned already
    subject, durable = await invoke_consumer(bus)
    await bus.ensure_consumer("INVOKE", durable, filter_subject=subject, max_ack_pending=7)
    info = await bus.js.consumer_info("INVOKE", durable)
    assert info.config.max_ack_pending == 7
    streams = {s.config.name: s.config for s in await bus.js.streams_info()}
    assert {"INVOKE", "RESULTS", "EVENTS", "LOGS", "BUILD"} <= streams.keys()
    assert streams["INVOKE"].retention == "workqueue"
    # One consumer per deployed function: not the server's default cap of 1,000.
    assert streams["INVOKE"].max_consumers == contract.INVOKE_MAX_CONSUMERS
    assert streams["RESULTS"].max_age == pytest.approx(24 * 3600)


async def test_failed_input_is_redelivered_and_handled_input_is_not(bus: Bus) -> None:
    subject, durable = await invoke_consumer(bus, ack_wait_s=1)
    deliveries: list[int] = []

    async def handler(msg: Msg) -> None:
        deliveries.append(msg.metadata.num_delivered)
        if len(deliveries) == 1:
            raise RuntimeError("container crashed")  # -> nak, redelivered in 1 s

    await bus.publish(subject, b"input-1")
    loop = Loop(bus, "INVOKE", durable, handler)
    try:
        await eventually(lambda: len(deliveries) >= 2, what="redelivery")
        # Workqueue retention: once acked, the input is removed from the
        # stream, so nothing is left that could be delivered again.
        await until(lambda: stored(bus, subject), 0, what="the handled input removed")
    finally:
        await loop.close()
    assert deliveries == [1, 2]
    info = await bus.js.consumer_info("INVOKE", durable)
    assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_input_never_acked_is_redelivered_after_ack_wait(bus: Bus) -> None:
    """An agent that hangs (or dies) holding an input: after ack_wait another
    pull gets it."""
    subject, durable = await invoke_consumer(bus, ack_wait_s=1)
    hang = asyncio.Event()
    deliveries: list[tuple[int, float]] = []

    async def handler(msg: Msg) -> None:
        deliveries.append((msg.metadata.num_delivered, time.monotonic()))
        if len(deliveries) == 1:
            await hang.wait()  # never acks while the test runs

    await bus.publish(subject, b"input")
    loop = Loop(bus, "INVOKE", durable, handler, max_concurrency=2)
    try:
        await eventually(lambda: len(deliveries) >= 2, what="redelivery after ack_wait")
    finally:
        hang.set()
        await loop.close()
    (n1, t1), (n2, t2) = deliveries
    assert (n1, n2) == (1, 2)
    assert t2 - t1 >= 0.8  # not before ack_wait ran out


async def test_in_progress_keeps_a_long_call_from_being_redelivered(bus: Bus) -> None:
    subject, durable = await invoke_consumer(bus, ack_wait_s=1)
    deliveries: list[int] = []
    finished = asyncio.Event()

    async def handler(msg: Msg) -> None:
        deliveries.append(msg.metadata.num_delivered)
        await asyncio.sleep(2.2)  # the long call: longer than ack_wait
        finished.set()

    await bus.publish(subject, b"slow")
    # A second free slot: a redelivered copy would be taken while the first runs.
    loop = Loop(bus, "INVOKE", durable, handler, max_concurrency=2, in_progress_every_s=0.3)
    try:
        await asyncio.wait_for(finished.wait(), 10)
        await until(lambda: stored(bus, subject), 0, what="the handled input removed")
    finally:
        await loop.close()
    assert deliveries == [1]
    info = await bus.js.consumer_info("INVOKE", durable)
    assert info.num_redelivered == 0


async def test_concurrency_is_bounded_and_every_input_handled_once(bus: Bus) -> None:
    subject, durable = await invoke_consumer(bus)
    running = peak = 0
    seen: list[bytes] = []

    async def handler(msg: Msg) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        seen.append(msg.data)
        running -= 1

    for i in range(8):
        await bus.publish(subject, f"in-{i}".encode())
    loop = Loop(bus, "INVOKE", durable, handler, batch=10, max_concurrency=3)
    try:
        await eventually(lambda: len(seen) == 8)
    finally:
        await loop.close()
    assert sorted(seen) == sorted(f"in-{i}".encode() for i in range(8))
    assert peak == 3


async def test_same_msg_id_is_stored_once(bus: Bus) -> None:
    call_id = uid()
    subject = f"thaw.result.{call_id}"
    first = await bus.publish(subject, b"result", msg_id=call_id)
    second = await bus.publish(subject, b"result again", msg_id=call_id)
    assert not first.duplicate
    assert second.duplicate and second.seq == first.seq

    state = (await bus.js.stream_info("RESULTS", subjects_filter=subject)).state
    assert state.subjects == {subject: 1}

    # And a reader sees exactly the first one.
    await bus.ensure_consumer("RESULTS", f"r{call_id}", filter_subject=subject)
    got: list[bytes] = []

    async def handler(msg: Msg) -> None:
        got.append(msg.data)

    loop = Loop(bus, "RESULTS", f"r{call_id}", handler)
    try:
        await eventually(lambda: len(got) >= 1)
        # Everything the stream holds for the reader has been delivered and acked.
        await until(lambda: unsettled(bus, "RESULTS", f"r{call_id}"), 0, what="all delivered")
    finally:
        await loop.close()
    assert got == [b"result"]


async def test_request_reply_survives_a_failing_handler(bus: Bus) -> None:
    subject = f"thaw.health.t{uid()}"
    reply_type = schema.decoder(schema.HealthReply)

    async def handler(msg: Msg) -> None:
        if msg.data == b"boom":
            raise ValueError("bad\nprobe")  # a newline must not break the reply header
        await msg.respond(schema.encode(schema.HealthReply(service="test", status="ok")))

    sub = await bus.serve(subject, handler)
    try:
        r = await bus.request(subject, b"ping")
        assert reply_type.decode(r.data) == schema.HealthReply(service="test", status="ok")

        with pytest.raises(BusRequestError, match="bad probe"):
            await bus.request(subject, b"boom", timeout_s=2)

        # The subscription is still there.
        r = await bus.request(subject, b"ping")
        assert reply_type.decode(r.data).status == "ok"
    finally:
        await sub.unsubscribe()

    with pytest.raises(nats.errors.NoRespondersError):
        await bus.request(subject, b"ping", timeout_s=2)


async def test_consume_survives_nats_restart() -> None:
    server = NatsServer().start()
    b = await Bus.connect(server.url, name="restart-test", connect_timeout_s=10)
    try:
        await b.provision()
        subject, durable = await invoke_consumer(b)
        seen: list[bytes] = []

        async def handler(msg: Msg) -> None:
            seen.append(msg.data)

        loop = Loop(b, "INVOKE", durable, handler)
        await b.publish(subject, b"before")
        await eventually(lambda: seen == [b"before"])

        server.kill()  # a crash, not a clean shutdown
        await eventually(lambda: not b.connected, what="disconnect")
        # A publish during the outage is buffered and completes on reconnect.
        during = asyncio.create_task(b.publish(subject, b"during"))
        await asyncio.sleep(0)  # it starts, and waits for the server
        assert not during.done()
        server.start()  # same port, same store: streams and consumers come back
        await eventually(lambda: b.connected, timeout_s=10, what="reconnect")
        assert not (await asyncio.wait_for(during, 5)).duplicate

        await b.publish(subject, b"after")
        await eventually(lambda: len(seen) == 3, what="messages after restart")
        assert seen == [b"before", b"during", b"after"]
        assert not loop.task.done()
        await loop.close()
    finally:
        await b.close(grace_s=1)
        server.cleanup()


async def test_consume_recreates_a_consumer_the_server_lost() -> None:
    """A server restarted on an empty store (a lost volume): the loop puts back
    the stream and consumer it was given, and carries on."""
    server = NatsServer().start()
    b = await Bus.connect(server.url, name="wiped-test", connect_timeout_s=10)
    try:
        await b.provision()
        subject, durable = await invoke_consumer(b)
        seen: list[bytes] = []

        async def handler(msg: Msg) -> None:
            seen.append(msg.data)

        loop = Loop(b, "INVOKE", durable, handler)
        await until(lambda: waiting_pulls(b, durable), 1, what="the loop pulling")
        server.kill()
        # kill() and start() block the event loop, so wait until the client has
        # seen the disconnect; otherwise `connected` below is still the old state.
        await eventually(lambda: not b.connected, what="disconnect")
        shutil.rmtree(server.store_dir)
        server.start()
        await eventually(lambda: b.connected, timeout_s=10, what="reconnect")
        # The loop's next fetches fail (no consumer) and it re-creates both.
        deadline = time.monotonic() + 5
        while True:
            try:
                await b.js.consumer_info("INVOKE", durable)
                break
            except nats.js.errors.NotFoundError:
                assert time.monotonic() < deadline, "consumer not re-created"
                await asyncio.sleep(0.05)
        await b.publish(subject, b"after wipe")
        await eventually(lambda: seen == [b"after wipe"], what="message after wipe")
        await loop.close()
    finally:
        await b.close(grace_s=1)
        server.cleanup()


async def test_connect_retries_until_the_server_starts() -> None:
    server = NatsServer()  # not started yet
    try:
        connecting = asyncio.create_task(
            Bus.connect(server.url, name="early", connect_timeout_s=10)
        )
        await asyncio.sleep(0.5)
        assert not connecting.done()
        await asyncio.to_thread(server.start)
        b = await asyncio.wait_for(connecting, 5)
        assert b.connected
        await b.close()
    finally:
        server.cleanup()


async def test_connect_gives_up_after_its_timeout() -> None:
    server = NatsServer()  # never started
    try:
        with pytest.raises(TimeoutError, match="could not connect"):
            await Bus.connect(server.url, name="nobody", connect_timeout_s=0.5)
    finally:
        server.cleanup()


async def test_trace_context_crosses_the_bus(bus: Bus) -> None:
    # A private SDK provider: a global one could be set only once per process.
    tracer = TracerProvider().get_tracer("test")
    subject, durable = await invoke_consumer(bus)
    seen: list[tuple[int, int]] = []

    async def handler(msg: Msg) -> None:
        in_handler = trace.get_current_span().get_span_context().trace_id
        from_headers = trace.get_current_span(trace_context(msg)).get_span_context().trace_id
        seen.append((in_handler, from_headers))

    with tracer.start_as_current_span("gateway: invoke") as span:
        sent = span.get_span_context().trace_id
        await bus.publish(subject, b"traced")

    loop = Loop(bus, "INVOKE", durable, handler)
    try:
        await eventually(lambda: len(seen) == 1)
    finally:
        await loop.close()
    assert seen == [(sent, sent)]

    # Request/reply carries it too.
    served: list[int] = []

    async def serve_handler(msg: Msg) -> None:
        served.append(trace.get_current_span().get_span_context().trace_id)
        await msg.respond(b"ok")

    health = f"thaw.health.t{uid()}"
    sub = await bus.serve(health, serve_handler)
    try:
        with tracer.start_as_current_span("probe") as span:
            await bus.request(health, b"ping")
        assert served == [span.get_span_context().trace_id]
    finally:
        await sub.unsubscribe()


async def test_close_stops_consume_loops(nats_url: str) -> None:
    b = await Bus.connect(nats_url, name="closer")
    await b.provision()
    _, durable = await invoke_consumer(b)

    async def handler(msg: Msg) -> None:
        pass

    task = asyncio.create_task(b.consume("INVOKE", durable, handler))  # no stop event
    await until(lambda: waiting_pulls(b, durable), 1, what="the loop pulling")
    await b.close(grace_s=3)
    await asyncio.wait_for(task, 3)
    assert not b.connected


async def test_a_full_input_stream_refuses_the_publish_and_keeps_every_input(bus: Bus) -> None:
    """INVOKE's bounds are of the kind that tell the publisher: at the bound
    a publish fails (the caller knows it was not taken) and nothing stored
    is dropped. A stream like INVOKE but bounded at 3 inputs shows it."""
    assert contract.INVOKE_STREAM.discard == "new"
    assert contract.INVOKE_STREAM.max_age_s is None  # an aged-out input is never answered
    small = dataclasses.replace(
        contract.INVOKE_STREAM,
        name=f"FULL{uid()}".replace("-", ""),
        subjects=(f"full-{uid()}.>",),
        max_msgs=3,
        max_bytes=None,
    )
    await bus.provision((small,))
    subject = small.subjects[0].replace(">", "fn")
    for i in range(3):
        await bus.publish(subject, f"input {i}".encode())
    with pytest.raises(nats.js.errors.APIError, match="maximum messages exceeded") as refused:
        await bus.publish(subject, b"one too many")
    # What the gateway answers 503 with: the server's own reason.
    assert refusal(refused.value) == "maximum messages exceeded"
    with pytest.raises(BatchPublishError) as batch_refused:
        await bus.publish_batch(subject, [("a", b"more"), ("b", b"still more")], timeout_s=10)
    assert refusal(batch_refused.value) == "maximum messages exceeded"
    assert refusal(TimeoutError()) is None  # no answer is no refusal
    assert await stored(bus, subject) == 3
    first = await bus.next_stored(subject)
    assert first is not None and first.data == b"input 0"
    await bus.js.delete_stream(small.name)
