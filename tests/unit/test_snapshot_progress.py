"""What `thaw deploy` says of the memory snapshots a deploy makes
(``thaw.snapshot_progress.outcome``), from the gateway's coverage and listing."""

from __future__ import annotations

from typing import Any

from thaw.snapshot_progress import UNCLAIMED_S, outcome
from thaw_core.schema import CpuFingerprint, Fingerprint, SnapshotCoverage, SnapshotInfo


def coverage(covered: int, present: int = 1, unhelpful: int = 0) -> SnapshotCoverage:
    return SnapshotCoverage(
        app="a", function="f", version=2, covered=covered, present=present, unhelpful=unhelpful
    )


def snapshot(**fields: Any) -> SnapshotInfo:
    base: dict[str, Any] = {
        "snapshot_id": "sn-1", "app": "a", "function": "f", "version": 2,
        "fingerprint": Fingerprint(cpu=CpuFingerprint(arch="x86_64", vendor="v", model="m")), "fingerprint_id": "fp",
    }  # fmt: skip
    return SnapshotInfo(**{**base, **fields})


def test_a_snapshot_being_made_is_waited_for() -> None:
    assert outcome("f", coverage(0), [snapshot(state="creating")], UNCLAIMED_S + 5) is None
    assert outcome("f", coverage(1, present=2), [snapshot(state="ready")], 3.0) is None


def test_ready_when_every_class_is_covered() -> None:
    got = outcome("f", coverage(2, present=2), [snapshot(state="ready", size=9)], 4.25)
    assert got is not None and got.ok
    assert got.line == "✓ memory snapshot of f ready in 4.2s (2 of 2 fingerprint classes)"


def test_a_failed_creation_says_why() -> None:
    failed = snapshot(state="obsolete", failures=1, error="criu dump: no space left")
    got = outcome("f", coverage(0), [failed], 2.0)
    assert got is not None and not got.ok
    assert "failed: criu dump: no space left" in got.line


def test_an_unhelpful_snapshot_means_a_cold_start_on_purpose() -> None:
    got = outcome("f", coverage(0, unhelpful=1), [snapshot(state="unhelpful")], 9.0)
    assert got is not None and got.ok and "starts cold" in got.line


def test_it_never_waits_on_what_nobody_makes() -> None:
    got = outcome("f", coverage(0, present=0), [], 0.0)
    assert got is not None and "no live node" in got.line
    assert outcome("f", coverage(0), [], UNCLAIMED_S - 1) is None
    unclaimed = outcome("f", coverage(0), [], UNCLAIMED_S)
    assert unclaimed is not None and not unclaimed.ok and "no node took up" in unclaimed.line
