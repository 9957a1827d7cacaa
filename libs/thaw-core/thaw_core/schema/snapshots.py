"""Memory snapshots: what is kept, the agent's lookup, and the lifecycle events."""

from __future__ import annotations

from typing import Literal

from thaw_core.schema.base import Message, Spec
from thaw_core.schema.nodes import Fingerprint

SnapshotState = Literal["creating", "ready", "suspect", "obsolete"]


class SnapshotInfo(Spec):
    snapshot_id: str
    app: str
    function: str
    version: int
    fingerprint: Fingerprint
    fingerprint_id: str
    blob_key: str = ""
    size: int = 0
    sha256: str = ""
    created_at: float = 0.0
    restores: int = 0
    failures: int = 0
    state: SnapshotState = "creating"


class SnapshotLookup(Message, tag="snapshot_lookup"):
    """An agent about to start a snapshot-enabled container asks which
    snapshot to restore, or whether it should make one."""

    app: str
    function: str
    version: int
    node_id: str
    fingerprint: Fingerprint


class SnapshotLookupReply(Message, tag="snapshot_lookup_reply"):
    # A ready snapshot compatible with the asking node, if any.
    snapshot: SnapshotInfo | None = None
    # True: none exists for this fingerprint class and nobody is making one;
    # the asker makes it (its claim is ``snapshot``'s id in state "creating").
    claim: SnapshotInfo | None = None


class SnapshotCreated(Message, tag="snapshot_created"):
    snapshot: SnapshotInfo


class SnapshotCreateFailed(Message, tag="snapshot_create_failed"):
    snapshot_id: str
    error: str


# Why a restore failed, as far as the agent can tell: "blob_corrupted" (the
# blob store's bytes fail their sha256: the snapshot is suspect at once),
# "cache_corrupted" (the node's cached copy changed: the node fetches it
# again; not the snapshot's fault), "restore" (anything else).
RestoreFailure = Literal["", "restore", "blob_corrupted", "cache_corrupted"]


class SnapshotRestored(Message, tag="snapshot_restored"):
    snapshot_id: str
    node_id: str
    ok: bool
    error: str = ""
    # From "container requested" to "ready for inputs".
    seconds: float = 0.0
    cause: RestoreFailure = ""
    # One per restore: a redelivered event is counted once.
    event_id: str = ""


SnapshotEvent = SnapshotCreated | SnapshotCreateFailed | SnapshotRestored
