"""The wire contract: one frozen msgspec Struct per event and command.

One module per domain (``calls``, ``nodes``, ``functions``, ``images``,
``snapshots``, ``reports``), on the bases in ``base``; ``registry`` lists every
wire type and subject, and ``proto/`` is generated from it by ``make proto``:
add every new wire type to ``WIRE_TYPES``. Everything is re-exported here, so
callers import from ``thaw_core.schema``.

Subjects (``registry.SUBJECTS`` is the machine-readable list used for proto/):

- ``thaw.health.<service>``        request/reply: ``HealthReply``
- ``thaw.event.node.<node_id>``    node heartbeats: ``NodeHeartbeat``
- ``thaw.event.error.<service>``   structured errors a service reports: ``ErrorEvent``
- ``thaw.event.app.<app>``         deploys and stops: ``AppEvent``
- ``thaw.invoke.<app>.<function>`` inputs (JetStream INVOKE, one durable per function): ``Invoke``
- ``thaw.result.<call_id>``        results (JetStream RESULTS, signed, keyed msg-id; ``result_proof``): ``Result``
- ``thaw.cancel.<call_id>``        core NATS: ``CancelCall``
- ``thaw.agent.<node_id>``         request/reply, scheduler -> agent: ``AgentCommand`` -> ``CommandReply``
- ``thaw.logs.<app>.<function>``   container stdout/stderr (JetStream LOGS): ``LogLine``
- ``thaw.snapshots.lookup``        request/reply, agent -> snapshots service: ``SnapshotLookup`` -> ``SnapshotLookupReply``
- ``thaw.event.snapshot.<app>``    snapshot lifecycle (EVENTS): ``SnapshotEvent``
- ``thaw.build.request``           image builds (JetStream BUILD): ``BuildRequest``
- ``thaw.build.log.<build_id>``    build progress and output (BUILD): ``BuildLog``
- ``thaw.build.result.<build_id>`` build outcome (BUILD): ``BuildResult``
- ``thaw.builder.lookup``          request/reply: ``ImageLookup`` -> ``ImageLookupReply``
- ``thaw.secrets.fetch``           request/reply, agent or builder -> gateway: ``SecretsRequest`` (with its command's ``SecretsGrant``) -> ``SecretsReply``
- ``thaw.volumes.<op>``            request/reply, to the volumes service: ensure, delete, list,
  entries, commit (``schema.volumes``)

Names (apps, functions, nodes) are subject tokens, so they are checked
against ``NAME_RE`` wherever they enter the system.
"""

from __future__ import annotations

from thaw_core.schema.base import (
    NAME_RE,
    Message,
    Spec,
    check_name,
    now,
)
from thaw_core.schema.calls import (
    CALL_ID_RE,
    CallStatus,
    CancelCall,
    Codec,
    Invoke,
    JsonArgs,
    PayloadRef,
    Result,
    is_call_id,
    readable_call,
    readable_call_id,
    result_for,
)
from thaw_core.schema.functions import (
    AppEvent,
    Autoscale,
    BatchSpec,
    FunctionSpec,
    Resources,
    RetryPolicy,
    SecretRef,
    VolumeMount,
)
from thaw_core.schema.images import (
    AddLocalDir,
    AddLocalFile,
    AddLocalPythonSource,
    AptInstall,
    BuildLog,
    BuildOutput,
    BuildProgress,
    BuildRequest,
    BuildResult,
    DebianSlim,
    Env,
    FileEntry,
    FromDockerfile,
    FromRegistry,
    ImageLookup,
    ImageLookupReply,
    ImageManifest,
    ImageRef,
    ImageSpec,
    ImageStep,
    LayerRef,
    PipInstall,
    PipInstallFromRequirements,
    RunCommands,
    Step,
    StepStatus,
    UvPipInstall,
    Workdir,
)
from thaw_core.schema.nodes import (
    AgentCommand,
    CommandReply,
    ContainerInfo,
    ContainerState,
    CpuFingerprint,
    Fingerprint,
    GpuFingerprint,
    GpuInfo,
    NodeHeartbeat,
    StartContainer,
    StopContainer,
)
from thaw_core.schema.registry import (
    SUBJECTS,
    WIRE_TYPES,
    decoder,
    encode,
)
from thaw_core.schema.reports import (
    ErrorEvent,
    HealthReply,
    LogLine,
)
from thaw_core.schema.secret_grants import SecretsGrant
from thaw_core.schema.secrets import SecretsReply, SecretsRequest
from thaw_core.schema.snapshots import (
    RestoreFailure,
    SnapshotCoverage,
    SnapshotCreated,
    SnapshotCreateFailed,
    SnapshotEvent,
    SnapshotInfo,
    SnapshotLookup,
    SnapshotLookupReply,
    SnapshotRestored,
    SnapshotState,
)
from thaw_core.schema.volumes import (
    EntryKind,
    VolumeChanges,
    VolumeCommit,
    VolumeDelete,
    VolumeEnsure,
    VolumeEntries,
    VolumeEntriesReply,
    VolumeEntry,
    VolumeInfo,
    VolumeListAll,
    VolumeListReply,
    VolumeReply,
)
from thaw_core.schema.web import (
    HOP_BY_HOP_HEADERS,
    WEB_CHUNK_BYTES,
    WEB_SOCKET_MESSAGE_BYTES,
    WebAccepted,
    WebBodyChunk,
    WebHead,
    WebPartAck,
    WebPulled,
    WebResponsePart,
    WebSocketAccept,
    WebSocketClose,
    WebSocketData,
    WebSocketEvent,
    WebSocketIdle,
    WebToGateway,
    encode_web,
    web_decoder,
)

__all__ = [
    "CALL_ID_RE",
    "HOP_BY_HOP_HEADERS",
    "NAME_RE",
    "SUBJECTS",
    "WEB_CHUNK_BYTES",
    "WEB_SOCKET_MESSAGE_BYTES",
    "WIRE_TYPES",
    "AddLocalDir",
    "AddLocalFile",
    "AddLocalPythonSource",
    "AgentCommand",
    "AppEvent",
    "AptInstall",
    "Autoscale",
    "BatchSpec",
    "BuildLog",
    "BuildOutput",
    "BuildProgress",
    "BuildRequest",
    "BuildResult",
    "CallStatus",
    "CancelCall",
    "Codec",
    "CommandReply",
    "ContainerInfo",
    "ContainerState",
    "CpuFingerprint",
    "DebianSlim",
    "EntryKind",
    "Env",
    "ErrorEvent",
    "FileEntry",
    "Fingerprint",
    "FromDockerfile",
    "FromRegistry",
    "FunctionSpec",
    "GpuFingerprint",
    "GpuInfo",
    "HealthReply",
    "ImageLookup",
    "ImageLookupReply",
    "ImageManifest",
    "ImageRef",
    "ImageSpec",
    "ImageStep",
    "Invoke",
    "JsonArgs",
    "LayerRef",
    "LogLine",
    "Message",
    "NodeHeartbeat",
    "PayloadRef",
    "PipInstall",
    "PipInstallFromRequirements",
    "Resources",
    "RestoreFailure",
    "Result",
    "RetryPolicy",
    "RunCommands",
    "SecretRef",
    "SecretsGrant",
    "SecretsReply",
    "SecretsRequest",
    "SnapshotCoverage",
    "SnapshotCreateFailed",
    "SnapshotCreated",
    "SnapshotEvent",
    "SnapshotInfo",
    "SnapshotLookup",
    "SnapshotLookupReply",
    "SnapshotRestored",
    "SnapshotState",
    "Spec",
    "StartContainer",
    "Step",
    "StepStatus",
    "StopContainer",
    "UvPipInstall",
    "VolumeChanges",
    "VolumeCommit",
    "VolumeDelete",
    "VolumeEnsure",
    "VolumeEntries",
    "VolumeEntriesReply",
    "VolumeEntry",
    "VolumeInfo",
    "VolumeListAll",
    "VolumeListReply",
    "VolumeMount",
    "VolumeReply",
    "WebAccepted",
    "WebBodyChunk",
    "WebHead",
    "WebPartAck",
    "WebPulled",
    "WebResponsePart",
    "WebSocketAccept",
    "WebSocketClose",
    "WebSocketData",
    "WebSocketEvent",
    "WebSocketIdle",
    "WebToGateway",
    "Workdir",
    "check_name",
    "decoder",
    "encode",
    "encode_web",
    "is_call_id",
    "now",
    "readable_call",
    "readable_call_id",
    "result_for",
    "web_decoder",
]
