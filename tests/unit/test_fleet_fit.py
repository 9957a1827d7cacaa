"""Nowhere to run: which requests no node of a fleet could ever run, what
the user is told, and the scheduler saying so once per change."""

from __future__ import annotations

import logging

import pytest
from thaw_core import fleet_fit
from thaw_core.fleet_fit import NodeOffer, why_nowhere
from thaw_core.schema import FunctionSpec, GpuInfo, NodeHeartbeat, Resources
from thaw_scheduler.reconcile import DeployedFunction, Reconciler

CPU = NodeOffer("cpu-a", 2, 24000)
GPU = NodeOffer("gpu-a", 16, 128000, ("NVIDIA A10G", "NVIDIA A10G"))


def test_a_gpu_no_node_has_is_nowhere_naming_the_request_and_what_nodes_offer() -> None:
    why = why_nowhere(Resources(gpu="H100"), [CPU, GPU])
    assert why == (
        "no node can run cpu=0.125, memory=128 MiB, gpu=H100 (nodes offer:"
        " cpu-a: 2 CPUs, 24000 MiB, no GPU; gpu-a: 16 CPUs, 128000 MiB, 2x NVIDIA A10G)"
    )
    assert why_nowhere(Resources(gpu="A10G:3"), [CPU, GPU]) is not None
    # A later preference some node has is somewhere.
    assert why_nowhere(Resources(gpu="H100,A10G:2"), [CPU, GPU]) is None


def test_more_cpus_or_memory_than_any_node_has_is_nowhere() -> None:
    assert "memory=32768 MiB" in (why_nowhere(Resources(memory_mb=32768), [CPU]) or "")
    assert "cpu=4" in (why_nowhere(Resources(cpu=4), [CPU]) or "")
    assert why_nowhere(Resources(cpu=4, memory_mb=32768), [CPU, GPU]) is None


def test_a_mig_gpu_is_not_offered_and_no_nodes_is_no_verdict() -> None:
    mig = NodeOffer.of(
        "m", 8, 64000, [GpuInfo(index=0, name="NVIDIA A100-SXM4-80GB", memory_mb=1, mig=True)]
    )
    assert why_nowhere(Resources(gpu="A100"), [mig]) is not None
    assert why_nowhere(Resources(gpu="H100"), []) is None


def test_the_pending_limit_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fleet_fit.PENDING_LIMIT_ENV, raising=False)
    assert fleet_fit.pending_limit_s() == fleet_fit.DEFAULT_PENDING_LIMIT_S
    monkeypatch.setenv(fleet_fit.PENDING_LIMIT_ENV, "45")
    assert fleet_fit.pending_limit_s() == 45
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(fleet_fit.PENDING_LIMIT_ENV, bad)
        with pytest.raises(ValueError, match=fleet_fit.PENDING_LIMIT_ENV):
            fleet_fit.pending_limit_s()


def test_the_scheduler_says_it_once_per_change_and_remembers_since_when(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [100.0]
    r = Reconciler(bus=None, clock=lambda: clock[0])  # type: ignore[arg-type]
    r.observe(NodeHeartbeat(node_id="cpu-a", cores=2, memory_mb=24000))
    spec = FunctionSpec(name="f", module="m", qualname="f", resources=Resources(gpu="A10G"))
    f = DeployedFunction(app="a", version=1, bundle_sha256="x", spec=spec)
    r.set_catalog([f])
    with caplog.at_level(logging.INFO, logger="thaw_scheduler.reconcile"):
        for t in (100.0, 100.25, 100.5, 101.0):  # ticks, 4 a second
            clock[0] = t
            r._judge_nowhere(t)
    said = [rec.getMessage() for rec in caplog.records if "cannot run anywhere" in rec.getMessage()]
    assert len(said) == 1 and "a/f cannot run anywhere: no node can run" in said[0]
    assert r.nowhere[("a", "f")][1] == 100.0

    # A node with an A10G comes: it can run again, said once.
    r.observe(
        NodeHeartbeat(
            node_id="gpu-a", cores=8, memory_mb=64000,
            gpus=[GpuInfo(index=0, name="NVIDIA A10G", memory_mb=23028)],
        )
    )  # fmt: skip
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="thaw_scheduler.reconcile"):
        r._judge_nowhere(102.0)
        r._judge_nowhere(102.25)
    assert r.nowhere == {}
    assert [rec.getMessage() for rec in caplog.records] == ["a/f can run on a node again"]
