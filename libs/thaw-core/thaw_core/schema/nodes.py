"""Node agents: their heartbeats and fingerprints, the containers they run, and the scheduler's commands to them."""

from __future__ import annotations

from typing import Literal

import msgspec

from thaw_core.schema.base import Message, Spec, now
from thaw_core.schema.functions import FunctionSpec
from thaw_core.schema.sandboxes import StartSandbox
from thaw_core.schema.secret_grants import SecretsGrant


class GpuInfo(Spec):
    index: int
    name: str
    memory_mb: int
    uuid: str = ""
    # Its device node is /dev/nvidia<minor> (-1: unknown, the index is used).
    minor: int = -1
    mig: bool = False  # MIG mode on
    # The container it is given to ('': free); in heartbeats.
    container_id: str = ""


class CpuFingerprint(Spec):
    arch: str
    vendor: str = ""
    model: str = ""
    flags: list[str] = []


class GpuFingerprint(Spec):
    name: str
    compute_capability: str = ""


class Fingerprint(Spec):
    """What a memory snapshot needs from a node (DESIGN.md, "fingerprint").
    Compatibility is ``thaw_core.fingerprint.compatible``; its id names the
    fingerprint class snapshots are kept per."""

    cpu: CpuFingerprint
    gpus: list[GpuFingerprint] = []
    driver: str = ""
    cuda: str = ""
    criu: str = ""
    runc: str = ""
    kernel: str = ""


class NodeHeartbeat(Message, tag="node_heartbeat"):
    node_id: str
    cores: int
    memory_mb: int
    gpus: list[GpuInfo] = []
    # Free capacity after the containers the node runs now.
    free_cores: float = 0.0
    free_memory_mb: int = 0
    # The disk that holds containers' writable layers (ephemeral_disk): the
    # file system's size, and what is free on it less what live containers'
    # ephemeral disks may still write (their images are sparse).
    disk_mb: int = 0
    free_disk_mb: int = 0
    containers: list[ContainerInfo] = []
    # The node's CPU/GPU fingerprint; None until the agent has read it.
    fingerprint: Fingerprint | None = None
    # Snapshot ids in the node's local cache: the scheduler prefers such nodes.
    cached_snapshots: list[str] = []
    # Why its memory snapshots cannot take a GPU's state (enable_gpu_snapshot:
    # no cuda-checkpoint, no driver recent enough); "" when they can.
    no_gpu_snapshots: str = ""
    at: float = msgspec.field(default_factory=now)


ContainerState = Literal["starting", "ready", "draining", "stopped", "failed"]


class ContainerInfo(Spec):
    container_id: str
    app: str
    function: str
    version: int
    state: ContainerState
    inflight: int = 0
    max_inputs: int = 1
    started_at: float = 0.0
    # Since when it has run no input; the scheduler scales down from this.
    idle_since: float = 0.0
    # Restored from a memory snapshot: known once it is ready (while starting
    # it is not yet; a failed restore starts it cold under the same id).
    restored: bool = False
    error: str = ""
    # Where it runs; filled in by whoever knows (the scheduler, the API).
    node_id: str = ""
    # Started only to make a memory snapshot (``StartContainer.snapshot_only``):
    # it takes no inputs and stops once the snapshot is taken.
    snapshot_only: bool = False


class StartContainer(Message, tag="start_container"):
    container_id: str
    app: str
    version: int
    bundle_sha256: str
    spec: FunctionSpec
    # "Snapshot then stop" (the scheduler asks at deploy, so that the first
    # call already restores): the agent claims the snapshot for its class,
    # starts cold, checkpoints, and stops the container; it takes no inputs.
    # Nothing starts when the class needs no snapshot (one exists or is made).
    snapshot_only: bool = False
    # Leave to fetch ``spec.secrets`` for this container on this node, signed
    # by the scheduler (None when it has none): the gateway answers no other.
    secrets_grant: SecretsGrant | None = None


class StopContainer(Message, tag="stop_container"):
    container_id: str
    reason: str = ""
    grace_s: float = 10.0


AgentCommand = StartContainer | StopContainer | StartSandbox


class CommandReply(Message, tag="command_reply"):
    ok: bool
    error: str = ""
