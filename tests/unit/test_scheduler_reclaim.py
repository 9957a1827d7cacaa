"""Warm idle containers give way to work that finds its nodes full: a
function with inputs waiting and a sandbox both get room by stopping idle
containers (longest idle first, on the node needing fewest stopped), never
a container that runs something, holds a ``min_containers`` floor, or whose
function has inputs waiting."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from thaw_core import contract
from thaw_core.schema import (
    Autoscale,
    CommandReply,
    ContainerInfo,
    FunctionSpec,
    GpuInfo,
    NodeHeartbeat,
    Resources,
    StartContainer,
    StopContainer,
    encode,
)
from thaw_core.schema.sandboxes import PlaceSandbox, SandboxSpec, StartSandbox
from thaw_scheduler import sandbox_placement
from thaw_scheduler.placement import NodeCapacity
from thaw_scheduler.reclaim import Idle, make_room
from thaw_scheduler.reconcile import DeployedFunction, Reconciler
from thaw_scheduler.sandbox_placement import SandboxPlacer

CORE = Resources(cpu=1.0, memory_mb=256)


@dataclass
class Reply:
    data: bytes


@dataclass
class Bus:
    stored: dict[str, int] = field(default_factory=dict)
    commands: list[tuple[str, Any]] = field(default_factory=list)

    async def stored_subjects(self, subject: str) -> dict[str, int]:
        return dict(self.stored)

    async def request(self, subject: str, msg: Any, *, timeout_s: float = 5) -> Reply:
        self.commands.append((subject, msg))
        return Reply(encode(CommandReply(ok=True)))

    def stops(self) -> list[str]:
        return [m.container_id for _, m in self.commands if isinstance(m, StopContainer)]


def fn(name: str, min_containers: int = 0) -> DeployedFunction:
    spec = FunctionSpec(
        name=name, module="m", qualname=name, resources=CORE,
        autoscale=Autoscale(min_containers=min_containers),
    )  # fmt: skip
    return DeployedFunction("app", 1, "sha", spec)


def ready(cid: str, function: str, *, idle_since: float, inflight: int = 0) -> ContainerInfo:
    return ContainerInfo(
        container_id=cid, app="app", function=function, version=1, state="ready",
        inflight=inflight, idle_since=idle_since,
    )  # fmt: skip


def full_node(node_id: str, containers: list[ContainerInfo], gpus: list[GpuInfo] | None = None) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id=node_id, cores=2, memory_mb=4096, free_cores=0.0, free_memory_mb=4096 - 256 * len(containers),
        containers=containers, gpus=gpus or [], at=time.time(),
    )  # fmt: skip


def reconciler(bus: Bus, *functions: DeployedFunction) -> Reconciler:
    rec = Reconciler(bus)  # type: ignore[arg-type]
    rec.set_catalog(functions)
    return rec


def idle(node_id: str, cid: str, since: float, cpu: float = 1.0, gpus: tuple[str, ...] = ()) -> Idle:
    return Idle(node_id, ready(cid, "f", idle_since=since), Resources(cpu=cpu, memory_mb=256), gpus)


def test_make_room_stops_the_fewest_and_the_longest_idle_first() -> None:
    capacity = {
        "n1": NodeCapacity("n1", 0.0, 4096, ()),
        "n2": NodeCapacity("n2", 0.5, 4096, ()),
    }
    candidates = [idle("n1", "a", 30.0), idle("n1", "b", 10.0), idle("n2", "c", 20.0, cpu=0.5)]
    node, victims = make_room(capacity, candidates, CORE) or (None, [])
    # n2 needs one container stopped, n1 one as well: the tie goes to the
    # first node by name, and there the longest idle container (b).
    assert node is not None and node.node_id == "n1" and [v.container.container_id for v in victims] == ["b"]
    assert node.free_cores == 1.0
    assert make_room(capacity, candidates, Resources(cpu=3.0, memory_mb=1)) is None


def test_make_room_for_a_gpu_frees_a_container_holding_one() -> None:
    capacity = {"n1": NodeCapacity("n1", 4.0, 4096, ())}
    candidates = [idle("n1", "cpu-only", 1.0), idle("n1", "gpu", 2.0, gpus=("NVIDIA A10G",))]
    node, victims = make_room(capacity, candidates, Resources(cpu=1.0, memory_mb=256, gpu="A10G")) or (None, [])
    assert node is not None and [v.container.container_id for v in victims] == ["gpu"]


async def test_inputs_on_a_full_node_stop_another_functions_idle_container() -> None:
    bus = Bus(stored={contract.invoke_subject("app", "busy"): 1})
    rec = reconciler(bus, fn("busy"), fn("warm"), fn("floor", min_containers=1), fn("working"))
    rec.observe(full_node("n1", [
        ready("ct-warm", "warm", idle_since=time.time() - 5),
        ready("ct-floor", "floor", idle_since=time.time() - 50),
        ready("ct-working", "working", idle_since=0.0, inflight=1),
    ]))  # fmt: skip
    await rec.tick()
    assert bus.stops() == ["ct-warm"]
    started = [m for _, m in bus.commands if isinstance(m, StartContainer)]
    assert [m.spec.name for m in started] == ["busy"]


async def test_a_function_with_inputs_waiting_keeps_its_idle_containers() -> None:
    bus = Bus(stored={contract.invoke_subject("app", "a"): 1, contract.invoke_subject("app", "b"): 3})
    rec = reconciler(bus, fn("a"), fn("b"))
    # b's container is between inputs (its next one is stored): not idle for reclaiming.
    rec.observe(full_node("n1", [ready("ct-b", "b", idle_since=time.time() - 5),
                                 ready("ct-b2", "b", idle_since=0.0, inflight=1)]))  # fmt: skip
    await rec.tick()
    assert bus.stops() == []


async def test_a_sandbox_on_a_full_node_gets_an_idle_containers_room() -> None:
    bus = Bus()
    rec = reconciler(bus, fn("warm"))
    rec.observe(full_node("n1", [ready("ct-warm", "warm", idle_since=time.time() - 5)]))
    placer = SandboxPlacer(bus, rec)  # type: ignore[arg-type]
    spec = SandboxSpec(app="app", sandbox_id="sb-1", resources=CORE)
    placed = await placer.place(PlaceSandbox(spec=spec))
    assert (placed.node_id, placed.error) == ("n1", "")
    assert bus.stops() == ["ct-warm"]
    assert isinstance(bus.commands[-1][1], StartSandbox)


async def test_a_sandbox_with_no_room_even_so_is_told_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_placement, "FRESH_VIEW_WAIT_S", 0.2)  # no heartbeat comes
    bus = Bus()
    rec = reconciler(bus, fn("working"))
    rec.observe(full_node("n1", [ready("ct-working", "working", idle_since=0.0, inflight=1)]))
    placed = await SandboxPlacer(bus, rec).place(  # type: ignore[arg-type]
        PlaceSandbox(spec=SandboxSpec(app="app", sandbox_id="sb-2", resources=CORE))
    )
    assert placed.no_room and "no node has room" in placed.error and bus.commands == []
