"""thaw_core.service.Service against a real nats-server and Postgres: health
probes, the rejection path for malformed messages, supervised loops and
graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from thaw_core.bus import Bus, Msg
from thaw_core.config import Settings
from thaw_core.db import Database
from thaw_core.schema import ErrorEvent, HealthReply, NodeHeartbeat, decoder
from thaw_core.service import Service, ServiceCrashed

STREAM = "EVENTS"

_health = decoder(HealthReply)
_error = decoder(ErrorEvent)


class Recorder(Service):
    """A service with one consume loop that decodes NodeHeartbeats and keeps them."""

    name = "svctest"
    uses_db = True
    uses_blob = True

    def __init__(self, settings: Settings, *, tag: str) -> None:
        super().__init__(settings)
        self.tag = tag
        self.subject = f"thaw.event.svctest.{tag}"
        self.durable = f"svctest-{tag}"
        self.received: list[NodeHeartbeat] = []
        self.got_one = asyncio.Event()
        self.extra_checks: dict[str, str] = {}

    async def setup(self) -> None:
        self._decoder = decoder(NodeHeartbeat)
        await self.bus.ensure_consumer(
            STREAM, self.durable, filter_subject=self.subject, ack_wait_s=5, max_deliver=3
        )

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.consume]

    async def consume(self) -> None:
        await self.bus.consume(STREAM, self.durable, self.on_msg, stop=self.stopping)

    async def on_msg(self, msg: Msg) -> None:
        match await self.decode(msg, self._decoder):
            case None:
                return
            case NodeHeartbeat() as hb:
                # The database is really there: round-trip through it.
                assert self.db is not None
                assert await self.db.fetchval("SELECT $1::text", hb.node_id) == hb.node_id
                self.received.append(hb)
                self.got_one.set()

    async def checks(self) -> dict[str, str]:
        return dict(self.extra_checks)


def unique_service(base: type[Service]) -> type[Service]:
    """A subclass with a name of its own, so that concurrent tests (and their
    health queue groups and error subjects) never see each other."""
    name = f"{base.name}{uuid.uuid4().hex[:8]}"
    return type(f"{base.__name__}_{name}", (base,), {"name": name})


@pytest.fixture
async def settings(nats_url: str, make_db: Callable[..., Awaitable[Database]]) -> Settings:
    db = await make_db()
    dsn = db.dsn
    await db.close()
    state = tempfile.mkdtemp(prefix="thaw-svc-")
    os.makedirs(f"{state}/blobs")
    return Settings.from_env(
        {
            "THAW_STATE_DIR": state,
            "THAW_NATS_URL": nats_url,
            "THAW_DATABASE_URL": dsn,
            "THAW_BLOB_URL": f"file://{state}/blobs",
            "THAW_NODE_ID": "test-node",
        }
    )


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[tuple[Recorder, asyncio.Task[None]]]:
    cls = unique_service(Recorder)
    svc = cls(settings, tag=uuid.uuid4().hex[:12])
    async with svc:
        task = asyncio.create_task(svc.run())
        try:
            yield svc, task
        finally:
            await svc.shutdown(timeout_s=5)
            await asyncio.wait_for(task, 10)


async def ask_health(bus: Bus, name: str) -> HealthReply:
    reply = await bus.request(f"thaw.health.{name}", b"", timeout_s=5)
    return _health.decode(reply.data)


async def test_health_replies_ok(running: tuple[Recorder, asyncio.Task[None]], bus: Bus) -> None:
    svc, _ = running
    h = await ask_health(bus, svc.name)
    assert h.status == "ok", h
    assert h.service == svc.name
    assert h.checks == {"nats": "ok", "postgres": "ok", "blob": "ok"}
    assert h.pid == os.getpid()
    assert h.instance == svc.instance
    assert 0 < h.started_at <= time.time()


async def test_health_degraded_names_the_failing_check(
    running: tuple[Recorder, asyncio.Task[None]], bus: Bus
) -> None:
    svc, _ = running
    svc.extra_checks = {"widget": "widget store unreachable"}
    h = await ask_health(bus, svc.name)
    assert h.status == "degraded"
    assert h.checks["widget"] == "widget store unreachable"
    assert h.checks["nats"] == "ok"
    # A dependency that fails for real: close the pool under the service.
    svc.extra_checks = {}
    assert svc.db is not None
    await svc.db.pool.close()
    h = await ask_health(bus, svc.name)
    assert h.status == "degraded"
    assert h.checks["postgres"] != "ok" and h.checks["postgres"]


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        (b'{"type": "node_heartbeat", "node_id": ', "malformed", "not valid JSON"),
        (b'{"type": "node_vanished", "node_id": "n1"}', "unknown", "$.type"),
        (
            b'{"type": "node_heartbeat", "node_id": "n1", "cores": 1, "memory_mb": 1, "color": 1}',
            "malformed",
            "color",
        ),
        (
            b'{"type": "node_heartbeat", "node_id": "n1", "cores": "many", "memory_mb": 1}',
            "malformed",
            "cores",
        ),
    ],
    ids=["bad-json", "unknown-type", "unknown-field", "wrong-field-type"],
)
async def test_malformed_message_is_rejected_and_service_goes_on(
    running: tuple[Recorder, asyncio.Task[None]],
    bus: Bus,
    payload: bytes,
    code: str,
    fragment: str,
) -> None:
    svc, task = running
    errors: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_error(m: Msg) -> None:
        await errors.put(m)

    sub = await bus.nc.subscribe(f"thaw.event.error.{svc.name}", cb=on_error)
    try:
        await bus.publish(svc.subject, payload)
        m = await asyncio.wait_for(errors.get(), 10)
        ev = _error.decode(m.data)
        assert ev.service == svc.name
        assert ev.subject == svc.subject
        assert ev.code == code
        assert fragment in ev.error
        assert ev.payload_preview == payload.decode()[:256]

        # The next good message is processed: the service did not stop.
        good = NodeHeartbeat(node_id="good-" + uuid.uuid4().hex[:6], cores=2, memory_mb=512)
        await bus.publish(svc.subject, good)
        await asyncio.wait_for(svc.got_one.wait(), 10)
        assert [hb.node_id for hb in svc.received] == [good.node_id]
        assert not task.done()

        # The refused message was terminated, not left to be redelivered.
        await asyncio.sleep(0.2)
        info = await bus.js.consumer_info(STREAM, svc.durable)
        assert info.num_ack_pending == 0
        assert info.num_redelivered == 0
        assert errors.empty()
        assert (await ask_health(bus, svc.name)).status == "ok"
    finally:
        await sub.unsubscribe()


async def test_reject_never_raises(running: tuple[Recorder, asyncio.Task[None]]) -> None:
    svc, _ = running
    # An unknown code is kept in the text rather than put on the wire as is.
    await svc.reject("x.y", b"\xff\xfe", "weird", "boom")
    await svc.bus.close()
    await svc.reject("x.y", b"payload", "malformed", "the bus is gone")  # must not raise


class Stubborn(Service):
    """One loop that ignores the stop event, one that honours it."""

    name = "svcstubborn"
    uses_db = False

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.cancelled = False
        self.polite_done = False

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.stubborn, self.polite]

    async def stubborn(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def polite(self) -> None:
        await self.stopping.wait()
        self.polite_done = True


async def test_shutdown_cancels_a_loop_that_ignores_stop(settings: Settings, bus: Bus) -> None:
    svc = unique_service(Stubborn)(settings)
    async with svc:
        task = asyncio.create_task(svc.run())
        assert (await ask_health(bus, svc.name)).status == "ok"
        t0 = time.monotonic()
        await svc.shutdown(timeout_s=0.5)
        took = time.monotonic() - t0
        await asyncio.wait_for(task, 5)
    assert 0.4 <= took < 3, took
    assert svc.cancelled and svc.polite_done
    assert not svc.started
    assert svc.bus.nc.is_closed
    # Nobody answers health probes for it any more.
    with pytest.raises(Exception):  # noqa: B017 - no responders or timeout
        await bus.request(f"thaw.health.{svc.name}", b"", timeout_s=0.5)


class Crashing(Service):
    name = "svccrash"
    uses_db = False

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sibling_cancelled = False

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.boom, self.sibling]

    async def boom(self) -> None:
        await asyncio.sleep(0.1)
        raise RuntimeError("kaboom")

    async def sibling(self) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.sibling_cancelled = True
            raise


async def test_a_crashing_loop_stops_the_service_loudly(settings: Settings) -> None:
    svc = unique_service(Crashing)(settings)
    with pytest.raises(ServiceCrashed, match="kaboom") as info:
        async with svc:
            await asyncio.wait_for(svc.run(), 10)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert svc.sibling_cancelled
    assert svc.stopping.is_set()
    assert not svc.started and svc.bus.nc.is_closed
