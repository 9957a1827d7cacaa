"""The scheduler sends a snapshot-enabled function's containers where they
restore fastest: a cached compatible snapshot, then a stored compatible one."""

from thaw_core.schema import CpuFingerprint, Fingerprint, NodeHeartbeat, Resources
from thaw_scheduler.placement import NodeCapacity, choose
from thaw_scheduler.snapshot_affinity import ANY, CACHED, COMPATIBLE, ReadySnapshot, preference


def fp(*flags: str) -> Fingerprint:
    return Fingerprint(
        cpu=CpuFingerprint(arch="x86_64", vendor="GenuineIntel", model="Xeon", flags=list(flags)),
        criu="4.1.1",
        runc="1.1.5",
        kernel="6.18.44",
    )


def node(node_id: str, fingerprint: Fingerprint | None, cached: list[str] = ()) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id=node_id, cores=8, memory_mb=8000, free_cores=8, free_memory_mb=8000,
        fingerprint=fingerprint, cached_snapshots=list(cached),
    )


def test_cached_beats_compatible_beats_incompatible() -> None:
    snap = ReadySnapshot("sn-1", fp("sse4_2", "avx2"))
    nodes = {
        "cached": node("cached", fp("sse4_2", "avx2", "avx512f"), ["sn-1"]),
        "superset": node("superset", fp("sse4_2", "avx2", "avx512f")),
        "older-cpu": node("older-cpu", fp("sse4_2")),
        "unknown": node("unknown", None),
    }
    rank = preference([snap], nodes)
    caps = {n: NodeCapacity.from_heartbeat(hb) for n, hb in nodes.items()}
    assert rank(caps["cached"]) == CACHED
    assert rank(caps["superset"]) == COMPATIBLE
    assert rank(caps["older-cpu"]) == ANY
    assert rank(caps["unknown"]) == ANY
    assert choose(list(caps.values()), Resources(), rank).node_id == "cached"
    del caps["cached"]
    assert choose(list(caps.values()), Resources(), rank).node_id == "superset"


def test_a_cached_but_incompatible_snapshot_is_no_reason_to_go_there() -> None:
    snap = ReadySnapshot("sn-1", fp("sse4_2", "avx2"))
    nodes = {"n": node("n", fp("sse4_2"), ["sn-1"])}
    assert preference([snap], nodes)(NodeCapacity.from_heartbeat(nodes["n"])) == ANY
