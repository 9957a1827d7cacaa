"""At deploy the scheduler asks one node of each fingerprint class for a
snapshot, so that the first call restores (``deploy_snapshots``)."""

from thaw_core.schema import CpuFingerprint, Fingerprint, NodeHeartbeat, Resources
from thaw_scheduler.deploy_snapshots import RETRY_S, DeploySnapshots
from thaw_scheduler.snapshot_affinity import ReadySnapshot

KEY = ("app", "f", 1)


def fp(*flags: str) -> Fingerprint:
    return Fingerprint(
        cpu=CpuFingerprint(arch="x86_64", vendor="GenuineIntel", model="Xeon", flags=list(flags)),
        criu="4.1.1",
        runc="1.1.5",
        kernel="6.18.44",
    )


def node(node_id: str, fingerprint: Fingerprint | None, free_cores: float = 8) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id=node_id, cores=8, memory_mb=8000, free_cores=free_cores, free_memory_mb=8000,
        fingerprint=fingerprint,
    )  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_ask_per_uncovered_class_on_a_node_with_room() -> None:
    nodes = [
        node("a1", fp("avx2"), free_cores=0.5),  # no room for one core
        node("a2", fp("avx2")),
        node("b", fp("sse4_2")),
        node("unknown", None),  # no fingerprint: restores nothing, makes nothing
    ]
    asks = DeploySnapshots().asks([(KEY, Resources(cpu=1))], {}, nodes)
    assert sorted(a.node_id for a in asks) == ["a2", "b"]
    assert {a.key for a in asks} == {KEY}


def test_a_class_a_ready_snapshot_restores_on_is_covered() -> None:
    nodes = [node("old", fp("sse4_2")), node("new", fp("sse4_2", "avx2"))]
    # Taken on the older CPU: it restores on the newer one too.
    ready = {KEY: [ReadySnapshot("sn-1", fp("sse4_2"))]}
    assert DeploySnapshots().asks([(KEY, Resources())], ready, nodes) == []
    # Taken on the newer CPU: the older one still needs its own.
    ready = {KEY: [ReadySnapshot("sn-1", fp("sse4_2", "avx2"))]}
    asks = DeploySnapshots().asks([(KEY, Resources())], ready, nodes)
    assert [a.node_id for a in asks] == ["old"]


def test_asked_again_only_after_the_retry_time() -> None:
    clock = Clock()
    d = DeploySnapshots(clock=clock)
    nodes = [node("n", fp("avx2"))]
    assert len(d.asks([(KEY, Resources())], {}, nodes)) == 1
    clock.now += RETRY_S / 2
    assert d.asks([(KEY, Resources())], {}, nodes) == []
    clock.now += RETRY_S
    assert len(d.asks([(KEY, Resources())], {}, nodes)) == 1


def test_nothing_is_asked_twice_of_one_node_beyond_its_room() -> None:
    nodes = [node("n", fp("avx2"), free_cores=1.5)]
    other = ("app", "g", 1)
    asks = DeploySnapshots().asks([(KEY, Resources(cpu=1)), (other, Resources(cpu=1))], {}, nodes)
    assert len(asks) == 1  # the other waits for a later refresh
