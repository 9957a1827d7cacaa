"""The reconcile tick's cost does not grow with the deployed functions: one
count of INVOKE's subjects per tick, never a question per function, and a
function scaled to zero gets its container from those counts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from thaw_core import contract
from thaw_core.schema import (
    Autoscale,
    CommandReply,
    ContainerInfo,
    FunctionSpec,
    NodeHeartbeat,
    StartContainer,
    StopContainer,
    encode,
)
from thaw_scheduler.reconcile import DeployedFunction, Reconciler


@dataclass
class Reply:
    data: bytes


@dataclass
class CountingBus:
    """Answers like NATS would, and counts what it was asked."""

    stored: dict[str, int] = field(default_factory=dict)
    counts_read: int = 0
    consumers_asked: int = 0
    commands: list[Any] = field(default_factory=list)

    async def stored_subjects(self, subject: str) -> dict[str, int]:
        assert subject == contract.all_of(contract.INVOKE)
        self.counts_read += 1
        return dict(self.stored)

    async def consumer_state(self, consumer: Any) -> None:
        self.consumers_asked += 1

    async def request(self, subject: str, msg: Any, *, timeout_s: float = 5) -> Reply:
        self.commands.append(msg)
        return Reply(encode(CommandReply(ok=True)))


def deployed(n: int, **autoscale: Any) -> list[DeployedFunction]:
    return [
        DeployedFunction(
            "app", 1, "sha",
            FunctionSpec(name=f"f{i}", module="m", qualname=f"f{i}", autoscale=Autoscale(**autoscale)),
        )
        for i in range(n)
    ]  # fmt: skip


def node(containers: list[ContainerInfo] | None = None) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id="n1", cores=8, memory_mb=16000, free_cores=8, free_memory_mb=16000,
        containers=containers or [], at=time.time(),
    )  # fmt: skip


async def test_an_idle_tick_asks_once_whatever_the_number_of_functions() -> None:
    for n in (10, 1000):
        bus = CountingBus()
        r = Reconciler(bus)  # type: ignore[arg-type]
        r.set_catalog(deployed(n))
        r.observe(node())
        for _ in range(5):
            await r.tick()
        assert (bus.counts_read, bus.consumers_asked, bus.commands) == (5, 0, [])


async def test_the_first_stored_input_starts_one_container() -> None:
    bus = CountingBus(stored={contract.invoke_subject("app", "f7"): 1})
    r = Reconciler(bus)  # type: ignore[arg-type]
    r.set_catalog(deployed(1000))
    r.observe(node())
    await r.tick()
    await r.tick()  # the start is remembered: not asked twice
    starts = [c for c in bus.commands if isinstance(c, StartContainer)]
    assert [(c.app, c.spec.name) for c in starts] == [("app", "f7")]
    assert r.warm == {("app", "f7")}


async def test_min_containers_are_kept_without_inputs_and_idle_ones_go() -> None:
    bus = CountingBus()
    r = Reconciler(bus)  # type: ignore[arg-type]
    r.set_catalog(deployed(3, min_containers=1))
    r.observe(node())
    await r.tick()
    assert sum(isinstance(c, StartContainer) for c in bus.commands) == 3
    # A function at zero minimum whose container has been idle past its window stops.
    idle = ContainerInfo(
        container_id="c1", app="app", function="f0", version=1, state="ready",
        idle_since=time.time() - 3600, started_at=time.time() - 3600,
    )  # fmt: skip
    bus = CountingBus()
    r = Reconciler(bus)  # type: ignore[arg-type]
    r.set_catalog(deployed(3, scaledown_window_s=1))
    r.observe(node([idle]))
    await r.tick()
    assert [type(c) for c in bus.commands] == [StopContainer]


async def test_running_inputs_are_told_from_the_heartbeats() -> None:
    busy = ContainerInfo(
        container_id="c1", app="app", function="f0", version=1, state="ready",
        inflight=1, max_inputs=1,
    )  # fmt: skip
    bus = CountingBus(stored={contract.invoke_subject("app", "f0"): 3})
    r = Reconciler(bus)  # type: ignore[arg-type]
    r.set_catalog(deployed(1))
    r.observe(node([busy]))
    await r.tick()
    assert r.load(("app", "f0"), [busy]).pending == 2
    # Three inputs at one per container: two more containers.
    assert sum(isinstance(c, StartContainer) for c in bus.commands) == 2


async def test_a_stopped_container_is_not_counted_nor_stopped_again_before_its_node_says() -> None:
    clock = [time.time()]
    idle = ContainerInfo(
        container_id="c1", app="app", function="f0", version=1, state="ready",
        idle_since=clock[0] - 3600, started_at=clock[0] - 3600,
    )  # fmt: skip
    bus = CountingBus()
    r = Reconciler(bus, clock=lambda: clock[0])  # type: ignore[arg-type]
    r.set_catalog(deployed(1, scaledown_window_s=1))
    r.observe(node([idle]))
    await r.tick()
    await r.tick()  # the heartbeat still lists it: not asked twice
    assert [type(c) for c in bus.commands] == [StopContainer]
    # An input comes before the node's next heartbeat: a new container at once.
    bus.stored = {contract.invoke_subject("app", "f0"): 1}
    await r.tick()
    assert [type(c) for c in bus.commands] == [StopContainer, StartContainer]
