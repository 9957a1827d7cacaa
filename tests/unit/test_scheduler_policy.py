"""Autoscaling and placement decisions, as a user of min/max/buffer/scaledown sees them."""

from thaw_core.schema import Autoscale, ContainerInfo, GpuInfo, NodeHeartbeat, Resources
from thaw_scheduler.autoscale import Load, plan, target
from thaw_scheduler.placement import NodeCapacity, choose


def ready(cid: str, *, inflight: int = 0, idle_since: float = 0.0) -> ContainerInfo:
    return ContainerInfo(
        container_id=cid, app="a", function="f", version=1, state="ready",
        inflight=inflight, idle_since=idle_since,
    )


def test_scales_from_zero_on_the_first_input() -> None:
    assert plan(Autoscale(), Load(pending=1, running=0), 1, [], now=100).start == 1


def test_needs_one_container_per_max_inputs_slots() -> None:
    assert target(Autoscale(), Load(pending=10, running=0), max_inputs=4) == 3
    assert target(Autoscale(max_containers=2), Load(pending=10, running=0), 1) == 2


def test_buffer_only_while_active_and_min_always() -> None:
    assert target(Autoscale(buffer_containers=2), Load(0, 0), 1) == 0
    assert target(Autoscale(buffer_containers=2), Load(1, 0), 1) == 3
    assert target(Autoscale(min_containers=1), Load(0, 0), 1) == 1


def test_starting_containers_count_so_a_backlog_is_not_started_twice() -> None:
    starting = ContainerInfo(container_id="c1", app="a", function="f", version=1, state="starting")
    assert plan(Autoscale(), Load(pending=1, running=0), 1, [starting], now=0).is_empty


def test_scales_to_zero_only_after_the_scaledown_window() -> None:
    policy = Autoscale(scaledown_window_s=60)
    idle = [ready("c1", idle_since=100.0), ready("c2", idle_since=130.0)]
    assert plan(policy, Load(0, 0), 1, idle, now=150).is_empty
    assert plan(policy, Load(0, 0), 1, idle, now=170).stop == ["c1"]
    assert sorted(plan(policy, Load(0, 0), 1, idle, now=200).stop) == ["c1", "c2"]


def test_never_stops_a_busy_container() -> None:
    busy = [ready("c1", inflight=1, idle_since=0.0), ready("c2", idle_since=1.0)]
    assert plan(Autoscale(scaledown_window_s=1), Load(0, 1), 1, busy, now=100).stop == ["c2"]


def test_placement_takes_the_first_gpu_preference_with_room() -> None:
    a100 = NodeCapacity("a100", 8, 16000, ("NVIDIA A100-SXM4-80GB",))
    h100 = NodeCapacity("h100", 2, 16000, ("NVIDIA H100 80GB HBM3",))
    request = Resources(gpu="H100,A100-80GB")
    assert choose([a100, h100], request).node_id == "h100"
    # The H100 is taken: the second preference serves.
    assert choose([a100, h100.reserve(request)], request).node_id == "a100"
    assert choose([a100.reserve(request), h100.reserve(request)], request) is None
    assert choose([a100], Resources(gpu="A100-40GB")) is None


def test_placement_needs_capacity_and_spreads() -> None:
    small = NodeCapacity("small", 0.5, 512, ())
    big = NodeCapacity("big", 8, 16000, ())
    gpu = NodeCapacity.from_heartbeat(
        NodeHeartbeat(node_id="gpu", cores=16, memory_mb=64000, free_cores=4, free_memory_mb=8000,
                      gpus=[GpuInfo(index=0, name="NVIDIA H100 80GB HBM3", memory_mb=81559)])
    )
    assert choose([small, big], Resources(cpu=1, memory_mb=1024)).node_id == "big"
    assert choose([small], Resources(cpu=1)) is None
    assert choose([small, big, gpu], Resources(gpu="H100")).node_id == "gpu"
    assert choose([small, big, gpu], Resources(gpu="H100:2")) is None
    # A preference (e.g. a cached snapshot) outranks free cores.
    assert choose([small, big], Resources(), prefer=lambda n: n.node_id == "small").node_id == "small"


def test_reserving_takes_cores_memory_and_the_gpu() -> None:
    node = NodeCapacity("n", 4, 4096, ("NVIDIA A10G",))
    left = node.reserve(Resources(cpu=1, memory_mb=1024, gpu="A10G"))
    assert (left.free_cores, left.free_memory_mb, left.free_gpus) == (3, 3072, ())
