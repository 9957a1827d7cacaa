"""ephemeral_disk= is placed by: agents report the disk for containers'
writable layers (size, and free less what live ephemeral disks may still
write), the scheduler places on it and frees it from idle containers, and a
size larger than any node's disk is nowhere to run."""

from __future__ import annotations

from pathlib import Path

from thaw_agent.ephemeral_disk import IMAGE_NAME
from thaw_agent.layout import ContainerPaths
from thaw_agent.reservations import disk_mb, reserved
from thaw_core.fleet_fit import NodeOffer, why_nowhere
from thaw_core.schema import ContainerInfo, NodeHeartbeat, Resources
from thaw_scheduler.placement import NodeCapacity, choose
from thaw_scheduler.reclaim import Idle, make_room

DISK_10G = Resources(ephemeral_disk_mb=10_240)


def node(node_id: str, free_disk_mb: int, cores: float = 8.0) -> NodeCapacity:
    return NodeCapacity(node_id, cores, 16_000, (), free_disk_mb)


def test_a_node_without_the_disk_free_is_passed_over() -> None:
    small, big = node("small", 4_096, cores=16.0), node("big", 20_000)
    assert choose([small, big], DISK_10G) == big
    assert choose([small], DISK_10G) is None
    # No ephemeral_disk: disk is not counted (it writes to the node's disk as before).
    assert choose([node("full", 0)], Resources()) is not None


def test_reserving_takes_the_disk_so_a_second_container_goes_elsewhere() -> None:
    n = node("n", 15_000)
    left = n.reserve(DISK_10G)
    assert left.free_disk_mb == 15_000 - 10_240
    assert choose([left], DISK_10G) is None


def test_heartbeat_disk_is_what_placement_reads() -> None:
    hb = NodeHeartbeat(
        node_id="n",
        cores=4,
        memory_mb=8000,
        free_cores=4,
        free_memory_mb=8000,
        disk_mb=50_000,
        free_disk_mb=12_000,
    )
    assert NodeCapacity.from_heartbeat(hb).free_disk_mb == 12_000
    assert NodeOffer.from_heartbeat(hb).disk_mb == 50_000


def test_an_idle_containers_disk_is_room_made() -> None:
    info = ContainerInfo(
        container_id="warm",
        app="a",
        function="f",
        version=1,
        state="ready",
        idle_since=1.0,
        node_id="n",
    )
    warm = Idle("n", info, Resources(cpu=0.125, memory_mb=128, ephemeral_disk_mb=10_240))
    made = make_room({"n": node("n", 1_000)}, [warm], DISK_10G)
    assert made is not None
    room, victims = made
    assert [v.container.container_id for v in victims] == ["warm"]
    assert room.free_disk_mb == 11_240


def test_more_disk_than_any_node_has_is_nowhere_naming_it() -> None:
    nodes = [NodeOffer("a", 8, 16_000, (), 5_000), NodeOffer("b", 8, 16_000, (), 8_000)]
    why = why_nowhere(DISK_10G, nodes)
    assert why is not None
    assert (
        "ephemeral_disk=10240 MiB" in why
        and "a: 8 CPUs, 16000 MiB, no GPU, 5000 MiB of disk" in why
    )
    assert why_nowhere(Resources(ephemeral_disk_mb=8_000), nodes) is None


def test_the_agent_counts_an_ephemeral_disk_as_held_until_written(tmp_path: Path) -> None:
    paths = ContainerPaths(tmp_path / "c1")
    paths.dir.mkdir()
    r = Resources(cpu=0.5, memory_mb=256, ephemeral_disk_mb=64)
    # Before its image exists all of it is to come.
    assert reserved([(r, paths)]) == (0.5, 256, 64)
    image = paths.dir / IMAGE_NAME
    with open(image, "wb") as f:  # sparse, as the agent makes it
        f.truncate(64 * 1024 * 1024)
    assert reserved([(r, paths)]).disk_mb == 64
    with open(image, "r+b") as f:
        f.write(b"x" * (16 * 1024 * 1024))
        f.flush()
    assert reserved([(r, paths)]).disk_mb == 48
    # Containers without the option hold no disk.
    assert reserved([(Resources(), paths)]).disk_mb == 0


def test_the_disk_is_read_from_the_nearest_existing_dir(tmp_path: Path) -> None:
    size, free = disk_mb(tmp_path / "containers" / "not-yet")
    assert 0 < free <= size
