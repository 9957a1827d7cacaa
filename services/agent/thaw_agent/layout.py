"""Where one agent keeps its state on the host.

Everything lives under ``<THAW_STATE_DIR>/agent/<node>/``, so that several
agents on one machine (tests, or a node split into slices) never touch each
other's files, runc containers or cgroups::

    <node dir>/
      runc/                     runc --root: this agent's containers only
      bundles/<sha256>/         extracted code bundles, shared by containers
      snapshots/<id>/           memory snapshots, unpacked (images/, upper/, info.json)
      volume-chunks/            volume content by digest, shared by every mount here
      containers/<id>/
        oci/config.json         the OCI bundle runc runs
        volumes/<n>/            the function's n-th volume, bind-mounted at its path
        rootfs/                 overlay mount point (lower: the base rootfs)
        upper/ work/            the overlay's writable layer: the container's
                                file-system changes, kept apart for snapshots
        run/agent.sock          mounted at /run/thaw in the container
        runc.log                runc's own log (its errors)
        pid                     the container's init pid, as runc writes it
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def node_token(node_id: str) -> str:
    """``node_id`` made safe as a path component, NATS subject token and cgroup name."""
    return _UNSAFE.sub("_", node_id) or "unknown"


@dataclass(frozen=True)
class NodeLayout:
    state_dir: Path
    node_id: str

    @property
    def token(self) -> str:
        return node_token(self.node_id)

    @property
    def root(self) -> Path:
        return self.state_dir / "agent" / self.token

    @property
    def runc_root(self) -> Path:
        return self.root / "runc"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def containers(self) -> Path:
        return self.root / "containers"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def held_inputs(self) -> Path:
        """The journal of inputs this node's agent holds (``held_inputs``)."""
        return self.root / "held-inputs"

    @property
    def volume_chunks(self) -> Path:
        return self.root / "volume-chunks"

    def container(self, container_id: str) -> ContainerPaths:
        return ContainerPaths(self.containers / container_id)

    def cgroup(self, container_id: str) -> str:
        # The node in the path keeps two agents' same-named containers apart.
        return f"/thaw/{self.token}/{container_id}"


@dataclass(frozen=True)
class ContainerPaths:
    dir: Path

    @property
    def oci(self) -> Path:
        return self.dir / "oci"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def runc_log(self) -> Path:
        return self.dir / "runc.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    def make(self) -> None:
        for d in (self.oci, self.rootfs, self.upper, self.work, self.run):
            d.mkdir(parents=True, exist_ok=True)
