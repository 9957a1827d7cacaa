"""The wire contract: one frozen msgspec Struct per event and command.

Every message is tagged (field ``type``) so that a subject which carries
several kinds decodes into a union and is dispatched with ``match``. Unknown
fields are refused, so a producer that drifts from this module is caught at
the first message rather than silently misread. ``proto/`` is generated from
this module by ``make proto``; add every new wire type to ``WIRE_TYPES``.

Subjects (``SUBJECTS`` below is the machine-readable list used for proto/):

- ``thaw.health.<service>``        request/reply: ``HealthReply``
- ``thaw.event.node.<node_id>``    node heartbeats: ``NodeHeartbeat``
- ``thaw.event.error.<service>``   structured errors a service reports: ``ErrorEvent``
- ``thaw.event.app.<app>``         deploys and stops: ``AppEvent``
- ``thaw.invoke.<app>.<function>`` inputs (JetStream INVOKE, one durable per function): ``Invoke``
- ``thaw.result.<call_id>``        results (JetStream RESULTS, msg-id = call id): ``Result``
- ``thaw.cancel.<call_id>``        core NATS: ``CancelCall``
- ``thaw.agent.<node_id>``         request/reply, scheduler -> agent: ``AgentCommand`` -> ``CommandReply``
- ``thaw.logs.<app>.<function>``   container stdout/stderr (JetStream LOGS): ``LogLine``
- ``thaw.snapshots.lookup``        request/reply, agent -> snapshots service: ``SnapshotLookup`` -> ``SnapshotLookupReply``
- ``thaw.event.snapshot.<app>``    snapshot lifecycle (EVENTS): ``SnapshotEvent``
- ``thaw.build.request``           image builds (JetStream BUILD): ``BuildRequest``
- ``thaw.build.log.<build_id>``    build progress and output (BUILD): ``BuildLog``
- ``thaw.build.result.<build_id>`` build outcome (BUILD): ``BuildResult``
- ``thaw.builder.lookup``          request/reply: ``ImageLookup`` -> ``ImageLookupReply``

Names (apps, functions, nodes) are subject tokens, so they are checked
against ``NAME_RE`` wherever they enter the system.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal

import msgspec

from thaw_core import contract

# App, function and class names: they become NATS subject tokens and durable
# consumer names, where '.', '*', '>' and whitespace have meaning.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use letters, digits, '_' and '-' "
            "(at most 63, starting with a letter or digit)"
        )
    return name


class Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of the nested, untagged parts of messages."""


class Message(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="type",
):
    """Base of every wire type. Subclasses set ``tag=`` to their wire name."""


def now() -> float:
    return time.time()


# ---------------------------------------------------------------- health

class HealthReply(Message, tag="health"):
    service: str
    status: Literal["ok", "degraded"]
    # One entry per dependency ("nats", "postgres", "blob", ...): "ok" or the error.
    checks: dict[str, str] = {}
    pid: int = 0
    started_at: float = 0.0
    instance: str = ""


# ---------------------------------------------------------------- errors

class ErrorEvent(Message, tag="error"):
    """Published by a service that refused a message, so that the refusal is
    visible off the box and not only in one process's log."""

    service: str
    subject: str
    code: Literal["malformed", "unknown", "too_large", "internal"]
    error: str
    # The first bytes of the refused payload, for whoever debugs the producer.
    payload_preview: str = ""
    at: float = msgspec.field(default_factory=now)


# ---------------------------------------------------------------- nodes

class GpuInfo(Spec):
    index: int
    name: str
    memory_mb: int
    uuid: str = ""


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
    containers: list[ContainerInfo] = []
    # The node's CPU/GPU fingerprint; None until the agent has read it.
    fingerprint: Fingerprint | None = None
    # Snapshot ids in the node's local cache: the scheduler prefers such nodes.
    cached_snapshots: list[str] = []
    at: float = msgspec.field(default_factory=now)


# ---------------------------------------------------------------- functions

class Resources(Spec):
    cpu: float = 0.125
    memory_mb: int = 128
    # "A10G", "H100:2", "any", ... ; None: no GPU.
    gpu: str | None = None


class RetryPolicy(Spec):
    """``retries=N`` on a function is ``RetryPolicy(max_retries=N)``."""

    max_retries: int = 0
    backoff_coefficient: float = 2.0
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay_s(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1`` (attempts count from 1)."""
        return min(self.max_delay_s, self.initial_delay_s * self.backoff_coefficient ** (attempt - 1))


class Autoscale(Spec):
    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window_s: float = 60.0


class FunctionSpec(Spec):
    """One deployed function or class, as the SDK describes it at deploy."""

    name: str
    # Where the runtime finds it inside the code bundle.
    module: str
    qualname: str
    kind: Literal["function", "class"] = "function"
    methods: list[str] = []
    is_async: bool = False
    is_generator: bool = False
    resources: Resources = Resources()
    retries: RetryPolicy = RetryPolicy()
    autoscale: Autoscale = Autoscale()
    timeout_s: float = 300.0
    # @thaw.concurrent(max_inputs=...): inputs one container runs at once.
    max_inputs: int = 1
    env: dict[str, str] = {}
    enable_memory_snapshot: bool = False
    experimental_options: dict[str, Any] = {}
    # Image (builder issue) and schedule (cron issue) descriptions; opaque here.
    image: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    secrets: list[str] = []


class AppEvent(Message, tag="app_event"):
    app: str
    version: int
    state: Literal["deployed", "stopped"]
    at: float = msgspec.field(default_factory=now)


# ---------------------------------------------------------------- calls

Codec = Literal["pickle", "json"]
CallStatus = Literal["success", "failure", "timeout", "cancelled", "terminated"]


class Invoke(Message, tag="invoke"):
    """One input. ``args`` is ``codec``-encoded: pickle of ``(args, kwargs)``,
    or JSON ``{"args": [...], "kwargs": {...}}``. The gateway never unpickles."""

    call_id: str
    app: str
    function: str
    method: str | None = None
    # Constructor arguments of a class (thaw.parameter()), same codec as args.
    params: bytes = b""
    codec: Codec = "pickle"
    args: bytes = b""
    # 1 for the first try; a retry is a new message with attempt + 1.
    attempt: int = 1
    # A retry waits until then (the agent naks it with the remaining delay).
    not_before: float = 0.0
    map_id: str = ""
    index: int = 0
    created_at: float = msgspec.field(default_factory=now)


class Result(Message, tag="result"):
    call_id: str
    status: CallStatus
    codec: Codec = "pickle"
    # Success: the codec-encoded return value (a list of items for a generator).
    value: bytes = b""
    # Failure: the pickled exception when it pickles, and always its text.
    exc: bytes = b""
    error: str = ""
    traceback: str = ""
    attempts: int = 1
    map_id: str = ""
    index: int = 0
    container_id: str = ""
    started_at: float = 0.0
    finished_at: float = msgspec.field(default_factory=now)


class CancelCall(Message, tag="cancel_call"):
    call_id: str
    terminate_containers: bool = False


# ---------------------------------------------------------------- containers

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
    restored: bool = False
    error: str = ""
    # Where it runs; filled in by whoever knows (the scheduler, the API).
    node_id: str = ""


class StartContainer(Message, tag="start_container"):
    container_id: str
    app: str
    version: int
    bundle_sha256: str
    spec: FunctionSpec


class StopContainer(Message, tag="stop_container"):
    container_id: str
    reason: str = ""
    grace_s: float = 10.0


AgentCommand = StartContainer | StopContainer


class CommandReply(Message, tag="command_reply"):
    ok: bool
    error: str = ""


# ---------------------------------------------------------------- snapshots

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


class SnapshotRestored(Message, tag="snapshot_restored"):
    snapshot_id: str
    node_id: str
    ok: bool
    error: str = ""
    # From "container requested" to "ready for inputs".
    seconds: float = 0.0


SnapshotEvent = SnapshotCreated | SnapshotCreateFailed | SnapshotRestored


class LogLine(Message, tag="log"):
    app: str
    function: str
    container_id: str
    stream: Literal["stdout", "stderr", "system"]
    line: str
    at: float = msgspec.field(default_factory=now)

# ---------------------------------------------------------------- images

# Image builds (services/builder). An image is the list of steps ``thaw.Image``
# records (``image.spec()["steps"]``), decoded into one Struct per ``op`` so
# that a malformed step is refused with its path (``$.image.steps[2].packages``).
# Steps that add local files carry what the client uploaded: ``files``, each
# file's destination, sha256 (the blob ``files/<sha256>``) and mode;
# ``pip_install_from_requirements`` carries the file's text in ``requirements``.
# The deploying machine's own paths (``local_path``, ``path``) are kept for
# messages but are not part of the layer id: the content is.
#
# The lookup subject is not under ``thaw.build.>`` on purpose: the BUILD
# stream captures that subtree, and JetStream answers a request published on
# a captured subject with its own PubAck, which would reach the requester
# before the builder's reply.

BUILD_REQUEST_SUBJECT = contract.BUILD_REQUEST
IMAGE_LOOKUP_SUBJECT = contract.IMAGE_LOOKUP


def build_log_subject(build_id: str) -> str:
    return contract.build_log_subject(build_id)


def build_result_subject(build_id: str) -> str:
    return contract.build_result_subject(build_id)


class LayerRef(Spec):
    layer_id: str
    # sha256 of the compressed tar, stored at thaw_core.layers.blob_key(digest).
    digest: str
    # Size of the compressed tar in bytes.
    size: int
    # "debian_slim" for the base layer: a node whose default rootfs has this
    # layer id uses its rootfs in place of pulling the tar.
    base: str = ""


class ImageManifest(Spec):
    """What a node needs to run a container on an image (stored as JSON by the builder)."""

    image_id: str
    # Base first, top layer last; steps that changed no file are not listed.
    layers: list[LayerRef]
    env: dict[str, str] = {}
    workdir: str = "/"
    python_version: str = ""


class Step(
    msgspec.Struct,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="op",
    omit_defaults=True,
):
    """One image build step; ``op`` is its tag. Defaults are omitted when
    encoded, as the SDK omits options the user did not set, so a step's
    canonical JSON (and its layer id) is the same on both sides."""


class FileEntry(Spec, omit_defaults=True, kw_only=True):
    """One local file a step adds, uploaded by the client as blob ``files/<sha256>``."""

    dest: str  # absolute path in the image
    sha256: str
    mode: int = 0o644


class DebianSlim(Step, tag="debian_slim", kw_only=True):
    python_version: str | None = None


class FromRegistry(Step, tag="from_registry", kw_only=True):
    tag: str
    add_python: str | None = None


class FromDockerfile(Step, tag="from_dockerfile", kw_only=True):
    path: str
    context_dir: str | None = None


class _PipOptions(Step, kw_only=True):
    index_url: str | None = None
    extra_index_url: str | None = None
    find_links: str | None = None
    pre: bool = False


class PipInstall(_PipOptions, tag="pip_install", kw_only=True):
    packages: list[str]
    extra_options: str = ""


class UvPipInstall(_PipOptions, tag="uv_pip_install", kw_only=True):
    packages: list[str]
    extra_options: str = ""


class PipInstallFromRequirements(_PipOptions, tag="pip_install_from_requirements", kw_only=True):
    path: str = ""
    # The requirements file's text, sent by the client (the builder cannot read
    # the deploying machine's files).
    requirements: str | None = None


class AptInstall(Step, tag="apt_install", kw_only=True):
    packages: list[str]


class RunCommands(Step, tag="run_commands", kw_only=True):
    commands: list[str]


class Env(Step, tag="env", kw_only=True):
    vars: dict[str, str]


class Workdir(Step, tag="workdir", kw_only=True):
    path: str


class AddLocalFile(Step, tag="add_local_file", kw_only=True):
    local_path: str = ""
    remote_path: str
    copy: bool = False
    files: list[FileEntry] = []


class AddLocalDir(Step, tag="add_local_dir", kw_only=True):
    local_path: str = ""
    remote_path: str
    copy: bool = False
    ignore: list[str] = []
    files: list[FileEntry] = []


class AddLocalPythonSource(Step, tag="add_local_python_source", kw_only=True):
    modules: list[str]
    copy: bool = False
    files: list[FileEntry] = []


ImageStep = (
    DebianSlim
    | FromRegistry
    | FromDockerfile
    | PipInstall
    | UvPipInstall
    | PipInstallFromRequirements
    | AptInstall
    | RunCommands
    | Env
    | Workdir
    | AddLocalFile
    | AddLocalDir
    | AddLocalPythonSource
)


class ImageSpec(Spec):
    """``thaw.Image(...).spec()``'s steps (``FunctionSpec.image`` also carries
    ``image_id`` once the gateway had it built)."""

    steps: list[ImageStep]


class BuildRequest(Message, tag="build_request"):
    # A subject token (NAME_RE): the log and result subjects end with it.
    build_id: str
    image: ImageSpec
    # Who asked, for the logs: "app/function" or a user name.
    requested_by: str = ""


StepStatus = Literal["cached", "waiting", "building", "built", "applied", "failed"]


class BuildProgress(Message, tag="build_progress"):
    """One step changed state: ``cached`` (its layer exists), ``waiting``
    (another build is making the same layer), ``building``, ``built``,
    ``applied`` (env/workdir: metadata only), ``failed``."""

    build_id: str
    step: int  # index into image.steps
    op: str
    status: StepStatus
    layer_id: str = ""
    elapsed_s: float = 0.0
    at: float = msgspec.field(default_factory=now)


class BuildOutput(Message, tag="build_output"):
    """Output lines of a step's build container, in order, batched."""

    build_id: str
    step: int
    stream: Literal["stdout", "stderr", "system"]
    lines: list[str]
    at: float = msgspec.field(default_factory=now)


BuildLog = BuildProgress | BuildOutput


class BuildResult(Message, tag="build_result"):
    build_id: str
    ok: bool
    image_id: str = ""
    manifest: ImageManifest | None = None
    # On failure: the step that failed (-1: the request itself), its op, the
    # exit code of its command when one ran, what went wrong, and its last lines.
    failed_step: int = -1
    failed_op: str = ""
    exit_code: int | None = None
    error: str = ""
    log_tail: list[str] = []
    cached_steps: int = 0
    built_steps: int = 0
    elapsed_s: float = 0.0
    at: float = msgspec.field(default_factory=now)


class ImageLookup(Message, tag="image_lookup"):
    """Is this image built? By id, or by spec (the builder computes the id)."""

    image_id: str = ""
    image: ImageSpec | None = None


class ImageLookupReply(Message, tag="image_lookup_reply"):
    image_id: str
    built: bool
    manifest: ImageManifest | None = None
    # Set when the lookup itself was wrong (no id and no spec, an invalid spec).
    error: str = ""


# ---------------------------------------------------------------- registry

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
)

# subject pattern -> (description, payload types); proto/asyncapi.json is made from it.
SUBJECTS: dict[str, tuple[str, tuple[type[Message], ...]]] = {
    contract.HEALTH: ("Request/reply health probe of one service.", (HealthReply,)),
    contract.EVENT_NODE: ("Node heartbeats from agents.", (NodeHeartbeat,)),
    contract.EVENT_ERROR: ("Messages a service refused, and why.", (ErrorEvent,)),
    contract.EVENT_APP: ("Deploys and stops of an app.", (AppEvent,)),
    contract.INVOKE: ("Inputs of a function (JetStream INVOKE).", (Invoke,)),
    contract.RESULT: ("The result of one call (JetStream RESULTS).", (Result,)),
    contract.CANCEL: ("Cancel a call.", (CancelCall,)),
    contract.AGENT_COMMAND: (
        "Commands to one node agent (request/reply).",
        (StartContainer, StopContainer, CommandReply),
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
    BUILD_REQUEST_SUBJECT: ("Image build requests (JetStream BUILD).", (BuildRequest,)),
    contract.BUILD_LOG: (
        "A build's step progress and output (JetStream BUILD).",
        (BuildProgress, BuildOutput),
    ),
    contract.BUILD_RESULT: (
        "A build's outcome (JetStream BUILD, msg-id build-result-<build_id>).",
        (BuildResult,),
    ),
    IMAGE_LOOKUP_SUBJECT: (
        "Is an image built, and its manifest (request/reply, to the builder).",
        (ImageLookup, ImageLookupReply),
    ),
}


# Kept while callers move to thaw_core.contract, which owns these names.
invoke_subject = contract.invoke_subject
result_subject = contract.result_subject
consumer_name = contract.invoke_consumer_name


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


_encoder = msgspec.json.Encoder()


def decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    """A decoder for one type or a union; build it once per consumer."""
    return msgspec.json.Decoder(kind)
