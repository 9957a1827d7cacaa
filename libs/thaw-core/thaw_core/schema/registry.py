"""The wire-type registry: every type and every subject, which proto/ is generated from, and the codec."""

from __future__ import annotations

from typing import Any

import msgspec

from thaw_core import contract
from thaw_core.schema.base import Message
from thaw_core.schema.calls import CancelCall, Invoke, Result
from thaw_core.schema.functions import AppEvent
from thaw_core.schema.images import (
    BuildOutput,
    BuildProgress,
    BuildRequest,
    BuildResult,
    ImageLookup,
    ImageLookupReply,
)
from thaw_core.schema.nodes import CommandReply, NodeHeartbeat, StartContainer, StopContainer
from thaw_core.schema.reports import ErrorEvent, HealthReply, LogLine
from thaw_core.schema.sandboxes import (
    EXEC_OPS,
    EXEC_REPLIES,
    PlaceSandbox,
    SandboxPlaced,
    StartSandbox,
)
from thaw_core.schema.secrets import SecretsReply, SecretsRequest
from thaw_core.schema.snapshots import (
    SnapshotCreated,
    SnapshotCreateFailed,
    SnapshotLookup,
    SnapshotLookupReply,
    SnapshotRestored,
)
from thaw_core.schema.stores import STORE_OPS, StoreReply
from thaw_core.schema.volumes import (
    VolumeCommit,
    VolumeDelete,
    VolumeEnsure,
    VolumeEntries,
    VolumeEntriesReply,
    VolumeListAll,
    VolumeListReply,
    VolumeReply,
)
from thaw_core.schema.web import (
    WebAccepted,
    WebBodyChunk,
    WebPartAck,
    WebResponsePart,
    WebSocketAccept,
    WebSocketClose,
    WebSocketData,
    WebSocketIdle,
)

# Every wire type, for proto/ generation and for tests that round-trip each.
WIRE_TYPES: tuple[type[Message], ...] = (
    HealthReply,
    ErrorEvent,
    NodeHeartbeat,
    AppEvent,
    Invoke,
    Result,
    CancelCall,
    StartContainer,
    StopContainer,
    CommandReply,
    LogLine,
    SnapshotLookup,
    SnapshotLookupReply,
    SnapshotCreated,
    SnapshotCreateFailed,
    SnapshotRestored,
    BuildRequest,
    BuildProgress,
    BuildOutput,
    BuildResult,
    ImageLookup,
    ImageLookupReply,
    SecretsRequest,
    SecretsReply,
    VolumeEnsure,
    VolumeDelete,
    VolumeListAll,
    VolumeEntries,
    VolumeCommit,
    VolumeReply,
    VolumeListReply,
    VolumeEntriesReply,
    WebAccepted,
    WebBodyChunk,
    WebResponsePart,
    WebPartAck,
    WebSocketAccept,
    WebSocketData,
    WebSocketClose,
    WebSocketIdle,
    *STORE_OPS,
    StoreReply,
    StartSandbox,
    PlaceSandbox,
    SandboxPlaced,
    *EXEC_OPS,
    *EXEC_REPLIES,
)

# subject pattern -> (description, payload types); proto/asyncapi.json is made from it.
SUBJECTS: dict[str, tuple[str, tuple[type[Message], ...]]] = {
    contract.HEALTH: ("Request/reply health probe of one service.", (HealthReply,)),
    contract.EVENT_NODE: ("Node heartbeats from agents.", (NodeHeartbeat,)),
    contract.EVENT_ERROR: ("Messages a service refused, and why.", (ErrorEvent,)),
    contract.EVENT_APP: ("Deploys and stops of an app.", (AppEvent,)),
    contract.INVOKE: (
        (
            "Inputs of a function (JetStream INVOKE). Publish with the call id as"
            " Nats-Msg-Id (a repeated publish is dropped). With codec 'json', args (and"
            ' params) are the base64 of the UTF-8 JSON {"args": [...], "kwargs": {...}}.'
            " Give every Invoke a fresh random 32-byte key (base64): the agent signs the"
            " call's Result with it, and only a Result whose proof verifies under it is real."
            " NATS takes only thaw's credentials: an invoke client logs in with the nkey"
            " seed and inbox prefix of `thaw nats-client create`, publishes only for the"
            " apps it was granted, and gives its calls ids '<client>.<token>'."
        ),
        (Invoke,),
    ),
    contract.RESULT: (
        (
            "The result of one call (JetStream RESULTS, kept 24 hours). Read it by"
            " subscribing to thaw.result.<call_id> before publishing the Invoke (an"
            " invoke client may read only thaw.result.<client>.>), or, where the"
            " credential allows the JetStream API, afterwards as the RESULTS stream's"
            " last message by subject (a direct get with last_by_subj). With codec"
            " 'json', value is the base64 of the UTF-8 JSON return value; a failure"
            " has status 'failure', error and traceback."
            " Accept a result only when its proof is HMAC-SHA256 under the Invoke's key of"
            " the canonical bytes that Result.proof describes; anything else is a forgery"
            " (take the newest stored message on the subject whose proof verifies)."
        ),
        (Result,),
    ),
    contract.CANCEL: ("Cancel a call.", (CancelCall,)),
    contract.AGENT_COMMAND: (
        "Commands to one node agent (request/reply).",
        (StartContainer, StopContainer, StartSandbox, CommandReply),
    ),
    contract.SANDBOX_PLACE: (
        "Place a sandbox on a node and start it there (request/reply, gateway -> scheduler).",
        (PlaceSandbox, SandboxPlaced),
    ),
    contract.CONTAINER_EXEC: (
        (
            "One operation on a container's processes: start one, read its output, write its"
            " input, wait for it; a sandbox's tags and end (request/reply, gateway -> agent)."
        ),
        (*EXEC_OPS, *EXEC_REPLIES),
    ),
    contract.LOGS: ("Container output (JetStream LOGS).", (LogLine,)),
    contract.SNAPSHOT_LOOKUP: (
        "Which snapshot an agent restores, or whether it makes one (request/reply).",
        (SnapshotLookup, SnapshotLookupReply),
    ),
    contract.EVENT_SNAPSHOT: (
        "Snapshot lifecycle: created, creation failed, restored (or not).",
        (SnapshotCreated, SnapshotCreateFailed, SnapshotRestored),
    ),
    contract.BUILD_REQUEST: ("Image build requests (JetStream BUILD).", (BuildRequest,)),
    contract.BUILD_LOG: (
        "A build's step progress and output (JetStream BUILD).",
        (BuildProgress, BuildOutput),
    ),
    contract.BUILD_RESULT: (
        "A build's outcome (JetStream BUILD, msg-id build-result-<build_id>).",
        (BuildResult,),
    ),
    contract.IMAGE_LOOKUP: (
        "Is an image built, and its manifest (request/reply, to the builder).",
        (ImageLookup, ImageLookupReply),
    ),
    contract.SECRETS_FETCH: (
        "The values of a container's secrets (request/reply, agent -> gateway).",
        (SecretsRequest, SecretsReply),
    ),
    contract.VOLUMES_ENSURE: (
        "Look up a volume, creating it if asked (request/reply, to the volumes service).",
        (VolumeEnsure, VolumeReply),
    ),
    contract.VOLUMES_DELETE: ("Delete a volume (request/reply).", (VolumeDelete, VolumeReply)),
    contract.VOLUMES_LIST: ("Every volume (request/reply).", (VolumeListAll, VolumeListReply)),
    contract.VOLUMES_ENTRIES: (
        "One page of a volume's entries, all or changed since a version (request/reply).",
        (VolumeEntries, VolumeEntriesReply),
    ),
    contract.VOLUMES_COMMIT: (
        "Apply changes to a volume, one commit at a time per volume (request/reply).",
        (VolumeCommit, VolumeReply),
    ),
    contract.STORE_REQUEST: (
        "A container's Dict or Queue operation (request/reply, agent -> gateway; msgpack).",
        (*STORE_OPS, StoreReply),
    ),
    contract.QUEUE_ITEM: (
        "A thaw.Queue partition's items (raw bytes as put: JSON or cloudpickle).",
        (),
    ),
    contract.WEB_REQUEST: (
        "The next body chunk of a web request, or a websocket's next message from its"
        + " client (request/reply, agent -> gateway; msgpack).",
        (WebBodyChunk, WebSocketData, WebSocketClose, WebSocketIdle),
    ),
    contract.WEB_RESPONSE: (
        "A web request taken, and its response parts, or a websocket's accept, messages"
        + " and close (agent -> gateway; msgpack).",
        (WebAccepted, WebResponsePart, WebPartAck, WebSocketAccept, WebSocketData, WebSocketClose),
    ),
}


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


_encoder = msgspec.json.Encoder()


def decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    """A decoder for one type or a union; build it once per consumer."""
    return msgspec.json.Decoder(kind)
