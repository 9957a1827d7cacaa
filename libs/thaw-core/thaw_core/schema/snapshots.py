"""Memory snapshots: what is kept, the agent's lookup, and the lifecycle events."""

from __future__ import annotations

from typing import Literal

from thaw_core.schema.base import Message, Spec
from thaw_core.schema.nodes import Fingerprint

# "unhelpful": ready, but its restores kept being no faster than the cold
# start that made it (``thaw_snapshots.catalog``): not restored, and not made
# again for its class; its function starts cold.
SnapshotState = Literal["creating", "ready", "suspect", "obsolete", "unhelpful"]


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
    # Seconds from "container requested" to Ready of the cold start that made
    # it, its checkpoint left out (0: not measured), and of its last good restore.
    cold_start_s: float = 0.0
    restore_s: float = 0.0
    # Why its creation failed (state "obsolete", size 0).
    error: str = ""


class SnapshotCoverage(Spec):
    """Of the fingerprint classes among the live nodes, those a ready snapshot
    of this deployed function version restores on (``snapshot_coverage``)."""

    app: str
    function: str
    version: int
    covered: int
    present: int
    # Of the classes not covered, those whose snapshot was found not to help
    # (state "unhelpful"): they start cold on purpose.
    unhelpful: int = 0


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
