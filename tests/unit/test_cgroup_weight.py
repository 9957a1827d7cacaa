"""The node's parent cgroups weigh as its cores (``cgroup_weight``), on a
cgroupfs laid out as cgroup v1 or v2 in a temp dir; where it cannot be done
the agent warns and goes on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from thaw_agent import cgroup_weight, resources
from thaw_agent.layout import NodeLayout

LAYOUT = NodeLayout(Path("/state"), "node-a")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(resources, "CGROUP_ROOT", tmp_path)
    return tmp_path


def v2_cgroup(d: Path, subtree: str = "") -> None:
    d.mkdir(exist_ok=True)
    (d / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (d / "cgroup.subtree_control").write_text(subtree)


def test_cgroup_v1_shares_are_1024_a_core_on_thaw_and_the_node(root: Path) -> None:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.shares").write_text("1024\n")

    cgroup_weight.weigh_containers(LAYOUT, 4)

    thaw = root / "cpu" / "thaw"
    assert (thaw / "cpu.shares").read_text() == "4096"
    assert (thaw / LAYOUT.token / "cpu.shares").read_text() == "4096"
    # Again (a second agent on the machine): the same.
    cgroup_weight.weigh_containers(LAYOUT, 4)
    assert (thaw / "cpu.shares").read_text() == "4096"


def test_cgroup_v2_weight_is_100_a_core_with_cpu_handed_down(root: Path) -> None:
    v2_cgroup(root, "memory pids\n")
    # What the kernel makes of a new cgroup, before the agent mkdirs it.
    v2_cgroup(root / "thaw")

    cgroup_weight.weigh_containers(LAYOUT, 2)

    assert (root / "cgroup.subtree_control").read_text() == "+cpu"
    assert (root / "thaw" / "cgroup.subtree_control").read_text() == "+cpu"
    assert (root / "thaw" / "cpu.weight").read_text() == "200"
    assert (root / "thaw" / LAYOUT.token / "cpu.weight").read_text() == "200"


def test_the_weights_stay_within_the_kernels_bounds() -> None:
    assert cgroup_weight.v2_weight(512) == 10_000
    assert cgroup_weight.v1_shares(1024) == 262_144


def test_without_a_cpu_controller_the_agent_warns_once_and_goes_on(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="thaw.agent.containers"):
        cgroup_weight.weigh_containers(LAYOUT, 2)

    assert [r.message for r in caplog.records] == [
        "the node's containers keep the CPU weight of one process against the host"
    ]
    # Nothing littered where no cpu hierarchy is mounted.
    assert list(root.iterdir()) == []


def test_a_read_only_cgroupfs_warns_and_goes_on(
    root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (root / "cpu").mkdir()
    (root / "cpu" / "cpu.shares").write_text("1024\n")

    def read_only(*_: object, **__: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    with caplog.at_level(logging.WARNING, logger="thaw.agent.containers"):
        cgroup_weight.weigh_containers(LAYOUT, 2)

    assert len(caplog.records) == 1
