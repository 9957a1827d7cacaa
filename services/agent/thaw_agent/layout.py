"""Where one agent keeps its state on the host.

Everything lives under ``<THAW_STATE_DIR>/agent/<node>/``, so that several
agents on one machine (tests, or a node split into slices) never touch each
other's files, runc containers or cgroups::

    <node dir>/
      runc/                     runc --root: this agent's containers only
      bundles/<sha256>/         extracted code bundles, shared by containers
      snapshots/<id>/           memory snapshots, unpacked (images/, upper/, info.json)
      volume-chunks/            volume content by digest, shared by every mount here
        files/                  whole volume files, assembled once, hard-linked by mounts
      containers/<id>/
        oci/config.json         the OCI bundle runc runs
        volumes/<n>/            the function's n-th volume, bind-mounted at its path
                                (an overlay: layers in volumes/<n>.layers/)
        rootfs/                 overlay mount point (lower: the base rootfs)
        lower/<n>/              the n-th lower dir, bind-mounted idmapped (userns)
        rw/upper/ rw/work/      the overlay's writable layer: the container's
                                file-system changes, kept apart for snapshots;
                                rw/ is a size-limited mount with ephemeral_disk
        rw.img                  that mount's ext4 image (ephemeral_disk)
        run/agent.sock          mounted at /run/thaw in the container
        runc.log                runc's own log (its errors)
        pid                     the container's init pid, as runc writes it
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from thaw_core.contract import node_token

# The cgroup above every agent's node cgroup on the machine (runc's
# ``cgroupsPath`` is absolute: under the cgroup hierarchy's root).
CGROUP_PARENT = "/thaw"


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

    @property
    def node_cgroup(self) -> str:
        """The parent cgroup of this node's containers (``cgroup_weight``)."""
        # The node in the path keeps two agents' same-named containers apart.
        return f"{CGROUP_PARENT}/{self.token}"

    def cgroup(self, container_id: str) -> str:
        return f"{self.node_cgroup}/{container_id}"


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
    def lower(self) -> Path:
        return self.dir / "lower"

    @property
    def rw(self) -> Path:
        """Where the writable layer's file system is (``ephemeral_disk``):
        a dir, or a mount of a size-limited one."""
        return self.dir / "rw"

    @property
    def upper(self) -> Path:
        return self.rw / "upper"

    @property
    def work(self) -> Path:
        return self.rw / "work"

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def runc_log(self) -> Path:
        return self.dir / "runc.log"

    @property
    def pid_file(self) -> Path:
        return self.dir / "pid"

    def make_outer(self) -> None:
        """All but the writable layer (which ``ephemeral_disk`` may mount first)."""
        for d in (self.oci, self.rootfs, self.lower, self.rw, self.run):
            d.mkdir(parents=True, exist_ok=True)

    def make_layer(self) -> None:
        for d in (self.upper, self.work):
            d.mkdir(parents=True, exist_ok=True)
