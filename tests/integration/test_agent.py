"""The node agent end to end, in-process, on real NATS, a real S3 server and
real runc containers on the default rootfs.

Each test runs ``AgentService`` objects in this process, uploads a code
bundle (a module using ``import thaw``) to the blob store, starts containers
with ``StartContainer`` requests over NATS, publishes ``Invoke`` messages on
the function's subject and reads the ``Result`` from the RESULTS stream, as
the gateway would. Apps are named per test: the NATS server is shared.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cloudpickle
import msgspec
import pytest
from fixtures.agent import (
    Agent,
    blob,  # noqa: F401 - a fixture
    call,
    make_agent,  # noqa: F401 - a fixture
    put_bundle,
    result_of,
    spec,
    stored_result,
    value,
)
from fixtures.host import needs_containers
from fixtures.logs import LogTap
from fixtures.wait import eventually
from thaw_agent.container import Container
from thaw_agent.dispatch_policy import DispatchTimings
from thaw_core import result_proof
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.contract import invoke_consumer_name as consumer_name
from thaw_core.contract import invoke_subject, result_subject
from thaw_core.schema import (
    CancelCall,
    CommandReply,
    ErrorEvent,
    Invoke,
    LogLine,
    NodeHeartbeat,
    Result,
    RetryPolicy,
    StartContainer,
    StopContainer,
    decoder,
)

pytestmark = [pytest.mark.slow, needs_containers]

APP_SOURCE = """
import os
import time

import thaw

app = thaw.App("agent-test")
_runs = 0


@app.function()
def add(a, b):
    print(f"adding {a} and {b}", flush=True)
    return a + b


@app.function()
def boom(x):
    raise ValueError(f"boom: {x} is not acceptable")


@app.function()
def flaky(x):
    global _runs
    _runs += 1
    print(f"flaky run {_runs}", flush=True)
    raise RuntimeError(f"failure number {_runs}")


@app.function()
def sleepy(seconds):
    print(f"sleeping {seconds}", flush=True)
    time.sleep(seconds)
    return os.getpid()


@app.function()
def marker(x):
    print(f"marker ran with {x}", flush=True)
    return x


@app.function()
def slow_marker(x, seconds):
    print(f"slow_marker ran with {x}", flush=True)
    time.sleep(seconds)
    return x


@app.function()
def crash(code):
    print(f"crashing with {code}", flush=True)
    os._exit(code)
"""

BROKEN_SOURCE = """
import thaw
app = thaw.App("broken")
raise ImportError("the model weights are missing")
"""

_results = decoder(Result)
_replies = decoder(CommandReply)
_logs = decoder(LogLine)


def unique_app() -> str:
    return f"agt-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- fixtures


async def queue_settled(bus: Bus, app: str, fn: str, timeout_s: float = 15) -> None:
    """Wait until the function's inputs are all acked: none pending, none in flight."""

    async def settled() -> bool:
        info = await bus.js.consumer_info("INVOKE", consumer_name(app, fn))
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(settled, timeout_s, f"the inputs of {app}.{fn} to be acked")


async def one_of_two_busy(
    agent: Agent, bus: Bus, blob: BlobStore, seconds: float, **kw: Any
) -> tuple[str, Container, str]:
    """Two ready `sleepy` containers (``spec("sleepy", **kw)``), one of them
    running a call that sleeps ``seconds``: (that call's id, the busy
    container, the idle one's id)."""
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    logs = await LogTap.open(bus, app, "sleepy")
    a = await agent.start(bus, app, sha, spec("sleepy", **kw))
    b = await agent.start(bus, app, sha, spec("sleepy", **kw))
    await agent.wait_state(a, "ready")
    await agent.wait_state(b, "ready")
    call_id = await call(bus, app, "sleepy", seconds)
    await logs.wait_for(f"sleeping {seconds}")
    (victim,) = [c for c in (agent.container(a), agent.container(b)) if c.inflight]
    return call_id, victim, b if victim.id == a else a


def process_gone(pid: int) -> bool:
    """Exited: no such process, or a zombie that its new parent has yet to reap
    (a container's process is not our child once runc exits)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def test_invoke_runs_in_a_container_and_stores_the_result(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(bus, app, sha, spec("add"))
    await agent.wait_state(cid, "ready")

    ids = [await call(bus, app, "add", i, 10) for i in range(5)]
    results = [await result_of(bus, i) for i in ids]

    assert [value(r) for r in results] == [10, 11, 12, 13, 14]
    assert {r.container_id for r in results} == {cid}
    assert all(r.attempts == 1 and r.call_id == i for r, i in zip(results, ids, strict=True))
    # Every input is acked (after its result was stored): the queue empties.
    await queue_settled(bus, app, "add")

    # Other languages publish JSON arguments and read a JSON value.
    call_id = f"fc-{uuid.uuid4().hex}"
    plain = Invoke(
        call_id=call_id, app=app, function="add", codec="json", args=b'{"args": [40, 2]}'
    )
    await bus.publish(invoke_subject(app, "add"), plain)
    result = await result_of(bus, call_id)
    assert (result.status, result.codec, json.loads(result.value)) == ("success", "json", 42)


async def test_a_raising_function_gives_a_failure_with_the_exception_text(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    await agent.wait_state(await agent.start(bus, app, sha, spec("boom")), "ready")

    result = await result_of(bus, await call(bus, app, "boom", 42))

    assert result.status == "failure"
    assert "boom: 42 is not acceptable" in result.error
    assert "ValueError" in result.error + result.traceback
    assert result.attempts == 1


async def test_retries_run_the_input_again_then_fail(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    retries = RetryPolicy(max_retries=2, initial_delay_s=0.2, backoff_coefficient=1.0)
    logs = await LogTap.open(bus, app, "flaky")
    await agent.wait_state(
        await agent.start(bus, app, sha, spec("flaky", retries=retries)), "ready"
    )

    call_id = await call(bus, app, "flaky", 1)
    result = await result_of(bus, call_id)

    # One result only, for the third and last attempt; the first two were retried.
    assert result.status == "failure"
    assert result.attempts == 3
    assert "failure number 3" in result.error
    await logs.wait_for("flaky run 3")
    # Acked once the last attempt's result is stored: nothing is left to run again.
    await queue_settled(bus, app, "flaky")
    assert "flaky run 4" not in logs.text()


async def test_timeout_kills_a_sleeping_input_and_replaces_its_container(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(bus, app, sha, spec("sleepy", timeout_s=1.0))
    first_pid = (await agent.wait_state(cid, "ready")).pid

    # Well inside the 60 s the input sleeps: only the timeout ends it.
    result = await result_of(bus, await call(bus, app, "sleepy", 60), timeout_s=30)

    assert result.status == "timeout"
    assert "timed out after 1s" in result.error
    # The stuck process is gone; a fresh container under the same id takes inputs.
    replacement = await agent.wait_state(cid, "ready")
    assert replacement.pid != first_pid
    assert process_gone(first_pid)
    assert value(await result_of(bus, await call(bus, app, "sleepy", 0))) > 0


async def test_kill_9_of_a_container_is_a_failed_attempt_retried_elsewhere(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    # An ack wait far beyond the wait for the result: only the retry hands the
    # input on in time.
    agent = await make_agent(dispatch_timings=DispatchTimings(ack_wait_s=600))
    retries = RetryPolicy(max_retries=1, initial_delay_s=0.1)
    call_id, victim, survivor = await one_of_two_busy(agent, bus, blob, 1.5, retries=retries)
    os.kill(victim.pid, signal.SIGKILL)

    result = await result_of(bus, call_id, timeout_s=60)
    assert value(result) > 0
    assert result.container_id == survivor
    assert result.attempts == 2  # the death was one failed attempt
    failed = agent.container(victim.id)
    assert failed.state == "failed"
    assert "exited" in failed.error
    info = {c.container_id: c for c in agent.svc.manager.infos()}
    assert info[victim.id].state == "failed" and info[survivor].state == "ready"


async def test_a_container_that_exits_under_its_input_answers_it_with_one_attempt_per_retry(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    """``os._exit(3)`` in user code: one failed attempt each time, retried per
    ``retries``, then a clear failure; not a redelivery until something gives up."""
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    logs = await LogTap.open(bus, app, "crash")
    command = spec("crash", retries=RetryPolicy(max_retries=1, initial_delay_s=0.1))
    first = await agent.start(bus, app, sha, command)
    await agent.wait_state(first, "ready")
    call_id = await call(bus, app, "crash", 3)
    await logs.wait_for("crashing with 3")
    await agent.wait_state(first, "failed")
    # The retry needs a container: the scheduler would start one, so do we. It
    # takes the waiting retry at once and dies of it, maybe before a poll ever
    # sees it "ready": the result says what happened.
    await agent.start(bus, app, sha, command)

    result = await result_of(bus, call_id, timeout_s=120)
    assert result.status == "failure"
    assert result.attempts == 2
    assert "the container died running this input" in result.error
    assert "exited" in result.error

    async def both_attempts_logged() -> bool:  # shipped in batches: maybe after the result
        return logs.text().count("crashing with 3") == 2

    await eventually(both_attempts_logged, 10, "both attempts' lines in the logs")


async def delivered_once_with(bus: Bus, app: str, stored: Result, **invoke: Any) -> str:
    """A ``marker`` input whose first delivery stored ``stored`` (as its
    result) but whose ack was lost: it is due for redelivery."""
    durable = consumer_name(app, "marker")
    await bus.ensure_consumer(
        "INVOKE", durable, filter_subject=invoke_subject(app, "marker"), ack_wait_s=10
    )
    call_id = await call(bus, app, "marker", "first", **invoke)
    psub = await bus.js.pull_subscribe_bind(durable=durable, stream="INVOKE")
    (first,) = await psub.fetch(1, timeout=5)
    stored = msgspec.structs.replace(stored, call_id=call_id)
    await bus.publish(result_subject(call_id), stored, msg_id=call_id)
    await first.nak()
    await psub.unsubscribe()
    return call_id


async def test_a_redelivered_input_whose_result_exists_is_not_run_again(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    stored = Result(call_id="", status="success", value=cloudpickle.dumps("stored"))
    call_id = await delivered_once_with(bus, app, stored)

    logs = await LogTap.open(bus, app, "marker")
    await agent.wait_state(await agent.start(bus, app, sha, spec("marker")), "ready")

    await queue_settled(bus, app, "marker")
    # A fresh input runs, so the container was taking inputs all along.
    assert value(await result_of(bus, await call(bus, app, "marker", "second"))) == "second"
    # Lines are shipped in batches: the result may come before the line.
    await logs.wait_for("marker ran with second")
    assert "marker ran with first" not in logs.text()
    assert value(await result_of(bus, call_id)) == "stored"


async def test_a_redelivered_input_with_only_a_forged_result_runs_and_is_signed(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    """A forged result (no valid proof under the input's key) must not make a
    redelivered input look done; the agent's own result is signed with the key."""
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    key = result_proof.new_key()
    forged = Result(
        call_id="", status="success", value=cloudpickle.dumps("forged"), proof=b"\0" * 32
    )
    call_id = await delivered_once_with(bus, app, forged, key=key)

    await agent.wait_state(await agent.start(bus, app, sha, spec("marker")), "ready")
    real = await eventually(
        lambda: result_proof.stored_result(bus, call_id, key),
        30,
        f"a result of {call_id} that verifies",
    )
    assert value(real) == "first" and result_proof.verifies(key, real)
    assert real.proof != forged.proof and real.value != forged.value


async def test_an_input_running_past_the_ack_wait_is_kept_alive_not_redelivered(
    make_agent: Callable[..., Awaitable[Agent]],
    bus: Bus,
    blob: BlobStore,
) -> None:
    # A short ack wait stands in for an input that runs longer than 10 s.
    timings = DispatchTimings(ack_wait_s=1.5, in_progress_every_s=0.4)
    agent = await make_agent(dispatch_timings=timings)
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    logs = await LogTap.open(bus, app, "slow_marker")
    # A second free slot: a redelivered copy would be taken and run at once.
    await agent.wait_state(
        await agent.start(bus, app, sha, spec("slow_marker", max_inputs=2)), "ready"
    )
    call_id = await call(bus, app, "slow_marker", "once", 4.0)
    assert value(await result_of(bus, call_id)) == "once"
    # A copy redelivered when the ack wait lapsed would have started in the
    # free slot long before the first run ended, so before this next input.
    assert value(await result_of(bus, await call(bus, app, "slow_marker", "next", 0))) == "next"
    await logs.wait_for("slow_marker ran with next")
    assert logs.text().count("slow_marker ran with once") == 1, logs.text()


async def test_two_agents_on_one_machine_do_not_collide(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore, tmp_path: Path
) -> None:
    # Same state dir, same container id: only the node ids differ.
    one = await make_agent("node-one", tmp_path / "shared")
    two = await make_agent("node-two", tmp_path / "shared")
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    for agent in (one, two):
        await agent.start(bus, app, sha, spec("add"), cid="ct-same")
        await agent.wait_state("ct-same", "ready")
    assert one.runc_ids() == ["ct-same"] == two.runc_ids()
    assert one.svc.layout.root != two.svc.layout.root

    reply = await one.command(bus, StopContainer(container_id="ct-same", grace_s=2))
    assert reply.ok
    assert one.runc_ids() == []
    assert two.runc_ids() == ["ct-same"]
    # node-two's container still serves the function.
    assert value(await result_of(bus, await call(bus, app, "add", 20, 22))) == 42


async def test_container_output_reaches_the_logs_subject(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    logs = await LogTap.open(bus, app, "add")
    cid = await agent.start(bus, app, sha, spec("add"))
    await agent.wait_state(cid, "ready")

    await result_of(bus, await call(bus, app, "add", 2, 3))

    await logs.wait_for("adding 2 and 3")
    line = next(line for line in logs.lines if "adding 2 and 3" in line.line)
    assert (line.app, line.function, line.container_id, line.stream) == (app, "add", cid, "stdout")
    # Stored in the LOGS stream too, for whoever reads them later.
    stored = await bus.js.get_last_msg("LOGS", f"thaw.logs.{app}.add")
    assert _logs.decode(stored.data).app == app


async def test_an_init_failure_fails_calls_with_its_error_and_is_reported(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, BROKEN_SOURCE)
    call_id = await call(bus, app, "add", 1, 2)
    cid = await agent.start(bus, app, sha, spec("add"))

    result = await result_of(bus, call_id)

    assert result.status == "failure"
    assert "the model weights are missing" in result.error
    assert "ImportError" in result.traceback
    info = next(c for c in agent.svc.manager.infos() if c.container_id == cid)
    assert info.state == "failed" and "the model weights are missing" in info.error


async def test_malformed_messages_are_refused_with_a_reason(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    errors: list[ErrorEvent] = []
    err_decoder = decoder(ErrorEvent)

    async def on_error(msg: Any) -> None:
        errors.append(err_decoder.decode(msg.data))

    sub = await bus.nc.subscribe("thaw.event.error.agent", cb=on_error)
    try:
        reply = await agent.command(bus, b'{"type": "start_container", "container_id": 5}')
        assert not reply.ok and "container_id" in reply.error
        reply = await agent.command(
            bus,
            StartContainer(
                container_id="ct-x", app=app, version=1, bundle_sha256="0" * 64, spec=spec("add")
            ),
        )
        assert not reply.ok and "not found" in reply.error

        await agent.wait_state(await agent.start(bus, app, sha, spec("add")), "ready")
        # An input with a readable call id but a broken body: its caller is told why.
        call_id = f"fc-{uuid.uuid4().hex}"
        bad = json.dumps(
            {"type": "invoke", "call_id": call_id, "app": app, "function": "add", "attempt": "x"}
        )
        await bus.publish(invoke_subject(app, "add"), bad.encode())
        result = await result_of(bus, call_id)
        assert (
            result.status == "failure" and "refused" in result.error and "attempt" in result.error
        )
        await bus.publish(invoke_subject(app, "add"), b"not json at all")
        # Neither blocks the queue: a good input still runs.
        assert value(await result_of(bus, await call(bus, app, "add", 1, 1))) == 2

        async def refused() -> bool:
            return sum(1 for e in errors if e.subject == invoke_subject(app, "add")) >= 2

        await eventually(refused, 5, "ErrorEvents for the two bad inputs")
    finally:
        await sub.unsubscribe()


async def test_a_cancelled_call_is_not_run(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    logs = await LogTap.open(bus, app, "marker")
    cid = await agent.start(bus, app, sha, spec("marker"))
    await agent.wait_state(cid, "ready")
    # Cancel before it is published: the agent remembers the id when it arrives.
    call_id = f"fc-{uuid.uuid4().hex}"
    await bus.publish_core(f"thaw.cancel.{call_id}", CancelCall(call_id=call_id))
    # A command answered after it: the agent has taken the cancel in by then
    # (one connection, delivered in order, the cancel handled first).
    assert (await agent.command(bus, StopContainer(container_id="ct-none", grace_s=0))).ok
    await call(bus, app, "marker", "cancelled", call_id=call_id)
    assert value(await result_of(bus, await call(bus, app, "marker", "after"))) == "after"

    assert "marker ran with cancelled" not in logs.text()
    assert await stored_result(bus, call_id) is None  # the gateway publishes "cancelled"
    await queue_settled(bus, app, "marker")


async def test_an_agent_removes_what_its_previous_life_left(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore, tmp_path: Path
) -> None:
    state = tmp_path / "reborn"
    first = await make_agent("node-reborn", state)
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await first.start(bus, app, sha, spec("add"))
    pid = (await first.wait_state(cid, "ready")).pid
    # A crash: the agent goes without stopping its container.
    first.svc.manager.containers.clear()
    await first.svc.shutdown(5)
    assert first.runc_ids() == [cid]

    second = await make_agent("node-reborn", state)

    assert second.runc_ids() == []
    assert process_gone(pid)
    assert not (second.svc.layout.containers / cid).exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(second.svc.layout.root) not in mounts


async def test_an_agent_hands_back_the_inputs_its_previous_life_held(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore, tmp_path: Path
) -> None:
    """The supervisor restarts a killed agent long before the ack wait runs out:
    the new agent naks what the old one's containers held, so those inputs run
    again at once instead of waiting out the ack wait (600 s here)."""
    state = tmp_path / "held"
    timings = DispatchTimings(ack_wait_s=600)
    first = await make_agent("node-held", state, dispatch_timings=timings)
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    logs = await LogTap.open(bus, app, "sleepy")
    await first.wait_state(await first.start(bus, app, sha, spec("sleepy")), "ready")
    await call(bus, app, "sleepy", 120)
    await logs.wait_for("sleeping 120")
    journal = first.svc.layout.held_inputs
    held = journal.read_text()
    assert held.count("\n") == 1
    # A crash: the agent goes without stopping its container or settling the
    # input, and leaves its journal as it was.
    first.svc.manager.containers.clear()
    await first.svc.shutdown(5)
    journal.write_text(held)

    info = await bus.js.consumer_info("INVOKE", consumer_name(app, "sleepy"))
    assert info.num_ack_pending == 1  # still held by the dead agent's delivery
    await make_agent("node-held", state, dispatch_timings=timings)
    # Back in the queue at once (no container of the function runs here to
    # take it, so the test does): without the nak it would come in 600 s.
    psub = await bus.js.pull_subscribe_bind(durable=consumer_name(app, "sleepy"), stream="INVOKE")
    try:
        (again,) = await psub.fetch(1, timeout=20)
        assert again.metadata.num_delivered == 2
        await again.ack()
    finally:
        await psub.unsubscribe()


async def test_heartbeats_report_containers_and_their_reservations(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(bus, app, sha, spec("add"))
    await agent.wait_state(cid, "ready")
    beats: list[NodeHeartbeat] = []
    hb_decoder = decoder(NodeHeartbeat)

    async def on_beat(msg: Any) -> None:
        beats.append(hb_decoder.decode(msg.data))

    sub = await bus.nc.subscribe(f"thaw.event.node.{agent.node_id}", cb=on_beat)
    try:

        async def reported() -> NodeHeartbeat | None:
            return next(
                (b for b in beats if any(c.container_id == cid for c in b.containers)), None
            )

        beat = await eventually(reported, 10, "a heartbeat listing the container")
    finally:
        await sub.unsubscribe()

    (info,) = beat.containers
    assert (info.container_id, info.app, info.function) == (cid, app, "add")
    assert (info.state, info.inflight, info.max_inputs) == ("ready", 0, 1)
    assert 0 < info.idle_since <= time.time()
    # The container's reservation (0.125 cores, 128 MB by default) is not free.
    assert beat.free_cores <= beat.cores - 0.125
    assert beat.free_memory_mb <= beat.memory_mb - 128
    # And the disk for containers' writable layers (ephemeral_disk places by it).
    assert 0 < beat.free_disk_mb <= beat.disk_mb


async def test_a_container_that_comes_or_goes_is_in_the_next_heartbeat_at_once(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    """The platform's view of a node (``thaw container list``, the scheduler's
    room for a sandbox) follows a container's start and stop without waiting
    out the heartbeat interval: an hour here, so only the change can send them."""
    agent = await make_agent(heartbeat_interval_s=3600)
    beats: list[NodeHeartbeat] = []
    hb_decoder = decoder(NodeHeartbeat)

    async def on_beat(msg: Any) -> None:
        beats.append(hb_decoder.decode(msg.data))

    def states(cid: str) -> list[str]:
        return [next((c.state for c in b.containers if c.container_id == cid), "") for b in beats]

    sub = await bus.nc.subscribe(f"thaw.event.node.{agent.node_id}", cb=on_beat)
    try:
        sha = await put_bundle(blob, APP_SOURCE)
        cid = await agent.start(bus, unique_app(), sha, spec("add"))
        await eventually(lambda: "ready" in states(cid), 60, "a heartbeat listing it ready")
        assert await agent.svc.manager.stop(cid, 1.0, "the test")
        await eventually(
            lambda: states(cid)[-1] == "" and "ready" in states(cid), 30, "a heartbeat without it"
        )
    finally:
        await sub.unsubscribe()


async def test_concurrent_inputs_run_side_by_side_in_one_container(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(bus, app, sha, spec("sleepy", max_inputs=3))
    container = await agent.wait_state(cid, "ready")
    assert container.max_inputs == 3

    ids = [await call(bus, app, "sleepy", 2) for _ in range(3)]

    # All three at once in the one container, not one after another.
    async def side_by_side() -> bool:
        return len(container.inflight) == 3

    await eventually(side_by_side, 30, "three inputs running at once")
    results = [await result_of(bus, i) for i in ids]
    assert [value(r) for r in results] == [1, 1, 1]
    assert {r.container_id for r in results} == {cid}


async def test_stopping_a_busy_container_hands_its_input_to_another(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    call_id, victim, survivor = await one_of_two_busy(agent, bus, blob, 2)
    reply = await agent.command(bus, StopContainer(container_id=victim.id, grace_s=0.5))

    assert reply.ok
    assert victim.id not in agent.runc_ids()
    assert victim.id not in {c.container_id for c in agent.svc.manager.infos()}
    # The stopped container's input ran again, to completion, on the other one.
    result = await result_of(bus, call_id)
    assert value(result) > 0 and result.container_id == survivor


async def test_cancelling_a_running_call_frees_its_slot(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = unique_app()
    sha = await put_bundle(blob, APP_SOURCE)
    logs = await LogTap.open(bus, app, "sleepy")
    cid = await agent.start(bus, app, sha, spec("sleepy"))
    pid = (await agent.wait_state(cid, "ready")).pid

    call_id = await call(bus, app, "sleepy", 30)
    await logs.wait_for("sleeping 30")
    await bus.publish_core(f"thaw.cancel.{call_id}", CancelCall(call_id=call_id))

    await queue_settled(bus, app, "sleepy", timeout_s=5)
    assert await stored_result(bus, call_id) is None  # the gateway publishes "cancelled"
    # The same process takes the next input: the cancelled one's slot is free.
    after = await result_of(bus, await call(bus, app, "sleepy", 0))
    assert value(after) == 1 and after.container_id == cid  # pid 1 in its own namespace
    assert agent.container(cid).pid == pid

    # terminate_containers: the container goes too, and a fresh one replaces it.
    call_id = await call(bus, app, "sleepy", 30)
    await logs.wait_for("sleeping 30", timeout_s=10)
    await eventually(_has_inflight(agent, cid), 5, "the call to run")
    await bus.publish_core(
        f"thaw.cancel.{call_id}", CancelCall(call_id=call_id, terminate_containers=True)
    )
    await queue_settled(bus, app, "sleepy", timeout_s=5)

    # The input is acked at once; the kill runs beside it.
    async def killed() -> bool:
        return process_gone(pid)

    await eventually(killed, 10, f"container process {pid} to be killed")
    assert (await agent.wait_state(cid, "ready")).pid != pid


def _has_inflight(agent: Agent, cid: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        c = agent.svc.manager.get(cid)
        return c is not None and bool(c.inflight)

    return check
