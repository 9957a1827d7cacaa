"""The wire contract's names: every NATS subject, JetStream stream and consumer
configuration, blob key prefix and container environment variable.

This is the one module that spells them. Services, the SDK and the in-container
runtime import from here; a test (``tests/unit/test_contract_names.py``) fails
when a literal subject, stream name, blob prefix or container env name appears
anywhere else. Other languages find the same names in ``proto/asyncapi.json``,
which is generated from ``thaw_core.schema.SUBJECTS`` using the patterns below.

A subject is defined once, as a pattern with ``{placeholders}``; the functions
fill it in, and ``wildcard`` turns it into the subscription that matches every
instance (``thaw.event.app.{app}`` -> ``thaw.event.app.*``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# ------------------------------------------------------------------ subjects

PREFIX = "thaw"

INVOKE = "thaw.invoke.{app}.{function}"
RESULT = "thaw.result.{call_id}"
CANCEL = "thaw.cancel.{call_id}"
HEALTH = "thaw.health.{service}"
AGENT_COMMAND = "thaw.agent.{node_id}"
LOGS = "thaw.logs.{app}.{function}"

EVENT_NODE = "thaw.event.node.{node_id}"
EVENT_ERROR = "thaw.event.error.{service}"
EVENT_APP = "thaw.event.app.{app}"
EVENT_SNAPSHOT = "thaw.event.snapshot.{app}"

SNAPSHOT_LOOKUP = "thaw.snapshots.lookup"
BUILD_REQUEST = "thaw.build.request"
BUILD_LOG = "thaw.build.log.{build_id}"
BUILD_RESULT = "thaw.build.result.{build_id}"
# Not under thaw.build.>: a request there would be captured by the BUILD stream
# and answered by JetStream's PubAck instead of the builder.
IMAGE_LOOKUP = "thaw.builder.lookup"
# Request/reply, agent -> gateway: the values of a container's secrets.
SECRETS_FETCH = "thaw.secrets.fetch"
# Request/reply, to the volumes service (queue group): look up or create,
# delete, list volumes; read a version's entries; apply a commit.
VOLUMES_ENSURE = "thaw.volumes.ensure"
VOLUMES_DELETE = "thaw.volumes.delete"
VOLUMES_LIST = "thaw.volumes.list"
VOLUMES_ENTRIES = "thaw.volumes.entries"
VOLUMES_COMMIT = "thaw.volumes.commit"
# One web request's parts (core NATS): the agent asks the gateway for the
# request body on .req and hands it the response on .resp. A request id is
# "<gateway id>.<token>", so each gateway subscribes once to all of its own.
# Request/reply, agent -> gateway (queue group; msgpack): a container's
# ``thaw.Dict`` / ``thaw.Queue`` operation (``thaw_core.schema.stores``), which
# the gateway carries out as it does the same operation over HTTP.
STORE_REQUEST = "thaw.store.request"
# Request/reply, gateway -> scheduler: place a sandbox and start it
# (``thaw_core.schema.sandboxes``). Request/reply, gateway -> the agent running
# a container (a sandbox or a function's): one operation on its processes.
SANDBOX_PLACE = "thaw.sandbox.place"
# Under the node's token, so each agent's credential is granted only its own
# node's containers (``permissions.node_grants``).
CONTAINER_EXEC = "thaw.exec.{node}.{container_id}"
# A queue's items: one subject per partition ("_" is the default partition;
# a partition's name always starts with a letter or digit).
QUEUE_ITEM = "thaw.queue.{queue}.{partition}"
WEB_REQUEST = "thaw.web.{request_id}.req"
WEB_RESPONSE = "thaw.web.{request_id}.resp"
# Request/reply inboxes: each NATS user replies to its own, so no other user
# may subscribe where its answers land (``thaw_core.permissions``).
INBOX = "_INBOX.{user}"

_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


def wildcard(pattern: str) -> str:
    """The subscription subject matching every instance of ``pattern``: each
    placeholder becomes ``*`` (``thaw.event.app.{app}`` -> ``thaw.event.app.*``)."""
    return _PLACEHOLDER.sub("*", pattern)


def all_of(pattern: str) -> str:
    """``pattern`` cut at its first placeholder, ending in ``>``: every subject
    under it, whatever the number of tokens (``thaw.logs.{app}.{function}`` ->
    ``thaw.logs.>``)."""
    head = pattern.split("{", 1)[0]
    return head + ">" if head.endswith(".") else head + ".>"


def invoke_subject(app: str, function: str) -> str:
    return INVOKE.format(app=app, function=function)


def result_subject(call_id: str) -> str:
    return RESULT.format(call_id=call_id)


RESULT_SUBJECT_PREFIX = RESULT.split("{", 1)[0]


def inbox_prefix(user: str) -> str:
    """Where the NATS user ``user`` gets its replies (``inbox_prefix`` of its client)."""
    return INBOX.format(user=user)


_NODE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def node_token(node_id: str) -> str:
    """``node_id`` made safe as a path component, NATS subject token and cgroup name."""
    return _NODE_UNSAFE.sub("_", node_id) or "unknown"


def agent_inbox_prefix(node_id: str) -> str:
    """The inbox of the agent of ``node_id``: its own, under the agents' common
    prefix (which the services answering agents may publish to), so no node
    reads another's replies (secrets among them)."""
    return inbox_prefix(f"agent.{node_token(node_id)}")


def client_call_id(client: str, token: str) -> str:
    """A call id of the invoke client ``client``: ``<client>.<token>``, so its
    results land under ``thaw.result.<client>.>``, which only it may read."""
    return f"{client}.{token}"


def client_results(client: str) -> str:
    """Every result of the invoke client ``client``'s calls."""
    return result_subject(client_call_id(client, ">"))


def call_id_of_result_subject(subject: str) -> str:
    """The call id a ``thaw.result.<call_id>`` subject names ('' for another subject)."""
    return subject[len(RESULT_SUBJECT_PREFIX) :] if subject.startswith(RESULT_SUBJECT_PREFIX) else ""


def cancel_subject(call_id: str) -> str:
    return CANCEL.format(call_id=call_id)


def web_request_subject(request_id: str) -> str:
    return WEB_REQUEST.format(request_id=request_id)


def web_response_subject(request_id: str) -> str:
    return WEB_RESPONSE.format(request_id=request_id)


def web_gateway_subjects(gateway_id: str) -> str:
    """Every part of every web request the gateway ``gateway_id`` holds."""
    return WEB_REQUEST.split("{", 1)[0] + gateway_id + ".>"


def health_subject(service: str) -> str:
    return HEALTH.format(service=service)


def agent_command_subject(node_id: str) -> str:
    """Commands to one agent; ``node_id`` must already be a subject token
    (``thaw_core.schema.node_subject_token``)."""
    return AGENT_COMMAND.format(node_id=node_id)


def logs_subject(app: str, function: str | None = None) -> str:
    """One function's container output, or every function of ``app`` when
    ``function`` is None."""
    return LOGS.format(app=app, function=function if function is not None else ">")


def container_exec_subject(node_id: str, container_id: str) -> str:
    """Where the agent of ``node_id`` serves the processes of ``container_id``."""
    return CONTAINER_EXEC.format(node=node_token(node_id), container_id=container_id)


# What a sandbox is listed as in heartbeats and `thaw container list`: not a
# Python name, so no function is ever called so.
SANDBOX_FUNCTION = "(sandbox)"
# The function a sandbox's secrets are fetched for (its ``FunctionSpec``'s
# name on the agent, its grant's function: ``thaw_core.secrets_grant``).
SANDBOX_SPEC_NAME = "sandbox"


def node_event_subject(node_id: str) -> str:
    return EVENT_NODE.format(node_id=node_id)


def error_event_subject(service: str) -> str:
    return EVENT_ERROR.format(service=service)


def app_event_subject(app: str) -> str:
    return EVENT_APP.format(app=app)


def snapshot_event_subject(app: str) -> str:
    return EVENT_SNAPSHOT.format(app=app)


def build_log_subject(build_id: str) -> str:
    return BUILD_LOG.format(build_id=build_id)


def build_result_subject(build_id: str) -> str:
    return BUILD_RESULT.format(build_id=build_id)


def build_result_msg_id(build_id: str) -> str:
    """The JetStream msg-id of a build's result: a build reports its outcome once."""
    return f"build-result-{build_id}"


def schedule_fire_msg_id(app: str, function: str, version: int, fire_ms: int) -> str:
    """The JetStream msg-id of a scheduled fire's input: a cron replica that
    publishes a fire another (or its own previous process) already published
    within INVOKE's duplicate window is dropped, so the fire runs once.
    ``:`` cannot occur in a name, so no two schedules share an id."""
    return f"schedule:{app}:{function}:{version}:{fire_ms}"


# ------------------------------------------------------------------ streams


@dataclass(frozen=True)
class StreamSpec:
    """One JetStream stream as every service provisions it."""

    name: str
    subjects: tuple[str, ...]
    retention: Literal["limits", "workqueue", "interest"] = "limits"
    max_age_s: float | None = None
    duplicate_window_s: float = 120
    max_msg_size: int | None = None
    # Bounds on what the stream stores (None: no bound), and what happens at
    # them: "old" drops the oldest messages, "new" refuses the publish, so
    # that the publisher is told and nothing it was told is stored is lost.
    max_msgs: int | None = None
    max_bytes: int | None = None
    discard: Literal["old", "new"] = "old"
    # How many consumers the stream takes (None: the server's default, which
    # nats-server 2.15 sets to 1,000 per stream).
    max_consumers: int | None = None


_HOUR = 3600.0
_GIB = 1024**3

# Inputs are never dropped once accepted: at its bounds INVOKE refuses new
# ones (the publisher gets an error) rather than discarding stored ones, and
# it has no max age, since an input that ages out would never be answered.
# What nobody consumes is answered instead (the scheduler's
# ``unanswered``). Every other stream is bounded by age and by size.
INVOKE_MAX_CONSUMERS = 100_000
INVOKE_STREAM = StreamSpec(
    "INVOKE",
    (all_of(INVOKE),),
    retention="workqueue",
    max_msgs=5_000_000,
    max_bytes=4 * _GIB,
    discard="new",
    # One durable consumer per deployed function: the server's default of
    # 1,000 would cap a platform at 1,000 functions.
    max_consumers=INVOKE_MAX_CONSUMERS,
)
RESULTS_STREAM = StreamSpec(
    "RESULTS", (all_of(RESULT),), max_age_s=24 * _HOUR, max_bytes=4 * _GIB
)
EVENTS_STREAM = StreamSpec(
    "EVENTS", ("thaw.event.>",), max_age_s=1 * _HOUR, max_bytes=_GIB // 2
)
LOGS_STREAM = StreamSpec("LOGS", (all_of(LOGS),), max_age_s=24 * _HOUR, max_bytes=2 * _GIB)
BUILD_STREAM = StreamSpec(
    "BUILD", ("thaw.build.>",), max_age_s=24 * _HOUR, max_bytes=_GIB // 2
)

STREAMS: tuple[StreamSpec, ...] = (
    INVOKE_STREAM,
    RESULTS_STREAM,
    EVENTS_STREAM,
    LOGS_STREAM,
    BUILD_STREAM,
)


# One stream per ``thaw.Queue`` (named by ``queue_stream``), work-queue
# retention: an item leaves the stream once its getter acks it.
QUEUE_STREAM_PREFIX = "THAW_QUEUE_"
QUEUE_DEFAULT_PARTITION = "_"
# How large one queue item or dict value may be (bytes, as stored): under the
# nats-server's default max_payload (1 MiB) with room for a request's framing.
STORE_MAX_VALUE_BYTES = 512 * 1024
# One ``thaw.Dict`` is the JetStream key-value bucket ``dict_bucket(name)``.
DICT_BUCKET_PREFIX = "thaw_dict_"


# NATS's own key-value layout (what any KV client reads): a bucket is the
# stream KV_<bucket>, a key the subject $KV.<bucket>.<key>.
KV_STREAM = "KV_{bucket}"
KV_KEY = "$KV.{bucket}.{key}"
# A queue item's ack token is the reply subject JetStream gave it.
QUEUE_ACK_PREFIX = "$JS.ACK." + QUEUE_STREAM_PREFIX


def dict_bucket(name: str) -> str:
    return f"{DICT_BUCKET_PREFIX}{name}"


def kv_stream(bucket: str) -> str:
    return KV_STREAM.format(bucket=bucket)


def kv_subject(bucket: str, key: str) -> str:
    return KV_KEY.format(bucket=bucket, key=key)


def queue_stream(name: str) -> StreamSpec:
    """The stream that holds queue ``name``'s items, every partition."""
    return StreamSpec(
        f"{QUEUE_STREAM_PREFIX}{name}",
        (QUEUE_ITEM.format(queue=name, partition="*"),),
        retention="workqueue",
        max_msg_size=STORE_MAX_VALUE_BYTES,
    )


def queue_subject(name: str, partition: str | None) -> str:
    return QUEUE_ITEM.format(queue=name, partition=partition or QUEUE_DEFAULT_PARTITION)


# An item a container took stays its own this long without an ack (the
# container acks it when it takes the next one or its input returns); a
# killed container's items go to another getter after at most this long.
QUEUE_ACK_WAIT_S = 30.0


def queue_consumer(name: str, partition: str | None) -> ConsumerSpec:
    """The one pull consumer every getter of a partition shares: each item
    goes to one getter."""
    token = partition or QUEUE_DEFAULT_PARTITION
    return ConsumerSpec(
        stream=queue_stream(name).name,
        durable=f"get{token}",
        filter_subject=queue_subject(name, partition),
        ack_wait_s=QUEUE_ACK_WAIT_S,
    )


# ---------------------------------------------------------------- consumers


@dataclass(frozen=True)
class ConsumerSpec:
    """One durable pull consumer: which stream, which subjects, how long an
    unacked message stays with its consumer before it is redelivered."""

    stream: str
    durable: str
    filter_subject: str | None = None
    ack_wait_s: float = 30.0
    max_deliver: int = -1


# An agent that dies (kill -9, a lost node) hands its inputs to another after
# at most this long; a live one keeps each running input alive every
# INVOKE_KEEPALIVE_S, a fifth of it, so that a busy event loop or a NATS
# reconnect has to hold up four pings in a row before a running input is
# handed away (and run twice).
INVOKE_ACK_WAIT_S = 2.5
INVOKE_KEEPALIVE_S = INVOKE_ACK_WAIT_S / 5


# The furthest ahead an Invoke's ``not_before`` may be: well above a retry's
# longest backoff (60 s), so that only a wrong clock or a wrong value is
# refused; a later one gets a failure Result at once instead of waiting.
INVOKE_MAX_DELAY_S = 300.0
# An input for a function nobody deploys is answered (a failure Result, or
# "cancelled" for an app that was stopped) once it has been stored this long,
# so that a deploy racing its first input is not mistaken for none.
UNANSWERED_GRACE_S = 2.0


def invoke_key_of_subject(subject: str) -> tuple[str, str] | None:
    """The (app, function) an INVOKE subject names; None for another subject."""
    head = INVOKE.split("{", 1)[0]
    if not subject.startswith(head):
        return None
    parts = subject[len(head) :].split(".")
    return (parts[0], parts[1]) if len(parts) == 2 and all(parts) else None


def invoke_consumer_name(app: str, function: str) -> str:
    """The durable pull consumer every agent shares for one function's inputs."""
    return f"fn_{app}_{function}"


def invoke_consumer(app: str, function: str) -> ConsumerSpec:
    """The one INVOKE consumer of a function: created by the gateway at deploy,
    bound to by agents, inspected by the scheduler."""
    return ConsumerSpec(
        stream=INVOKE_STREAM.name,
        durable=invoke_consumer_name(app, function),
        filter_subject=invoke_subject(app, function),
        ack_wait_s=INVOKE_ACK_WAIT_S,
    )


# ------------------------------------------------------------- blob keys

BUNDLES_PREFIX = "bundles/"
FILES_PREFIX = "files/"
SNAPSHOTS_PREFIX = "snapshots/"
LAYERS_PREFIX = "layers/"


def bundle_key(sha256: str) -> str:
    """A code bundle (zip of the user's sources), by content hash."""
    return f"{BUNDLES_PREFIX}{sha256}.zip"


def file_key(sha256: str) -> str:
    """A local file uploaded for an image step (``add_local_file``), by content hash."""
    return f"{FILES_PREFIX}{sha256}"


def snapshot_key(snapshot_id: str) -> str:
    """A packed memory snapshot (CRIU images and filesystem changes)."""
    return f"{SNAPSHOTS_PREFIX}{snapshot_id}.tar.zst"


def layer_key(digest: str) -> str:
    """An image layer (zstd tar), by digest."""
    return f"{LAYERS_PREFIX}{digest}"


VOLUMES_PREFIX = "volumes/"


def volume_chunk_key(sha256: str) -> str:
    """A piece of a volume file's content, by its sha256 (shared by every volume)."""
    return f"{VOLUMES_PREFIX}chunks/{sha256}"


def volume_pack_key(sha256: str) -> str:
    """Many small volume files' content in one blob, by its sha256; each file
    is named by a packed chunk reference (``thaw_core.volumes.refs``)."""
    return f"{VOLUMES_PREFIX}packs/{sha256}"


STORE_VALUES_PREFIX = "stores/values/"
# A Dict value or Queue item larger than STORE_MAX_VALUE_BYTES is kept in the
# blob store (at most this large), and the key or item holds a reference.
STORE_BLOB_MAX_BYTES = 64 * 1024 * 1024
# The first byte of a Dict value or Queue item that refers to such a copy;
# JSON follows: {"blob": <sha256>, "size": <bytes>}.
STORE_BLOB_REF = b"\x00"


def store_value_key(sha256: str) -> str:
    """A large Dict value or Queue item, by the sha256 of its encoded bytes."""
    return f"{STORE_VALUES_PREFIX}{sha256}"


PAYLOADS_PREFIX = "payloads/"
# Large call arguments and results are kept by the hour they were stored in,
# so that a whole hour's are deleted once its results have aged out of
# RESULTS_STREAM (see payload_hour_expired).
PAYLOAD_HOUR_S = 3600


def payload_key(hour: int, sha256: str) -> str:
    """Large call arguments or a large result (``schema.PayloadRef``)."""
    return f"{PAYLOADS_PREFIX}{hour}/{sha256}"


def payload_hour_expired(hour: int, now_s: float) -> bool:
    """Whether the payloads stored in ``hour`` outlived every result that can
    name them (RESULTS_STREAM's max age, counted from the hour's end)."""
    max_age = RESULTS_STREAM.max_age_s or 0.0
    return (hour + 1) * PAYLOAD_HOUR_S + max_age < now_s


def volume_commit_key(commit_id: str) -> str:
    """A commit too large for one NATS message, until the volumes service applies it."""
    return f"{VOLUMES_PREFIX}commits/{commit_id}.json"


# ------------------------------------------------- container environment

# Set by the agent in every container it starts; read by the runtime.
ENV_CONTAINER_ID = "THAW_CONTAINER_ID"
ENV_FUNCTION_SPEC = "THAW_FUNCTION_SPEC"
ENV_AGENT_SOCKET = "THAW_AGENT_SOCKET"
ENV_SNAPSHOT = "THAW_SNAPSHOT"
ENV_RUNTIME_PATHS = "THAW_RUNTIME_PATHS"
ENV_BUNDLE_DIR = "THAW_BUNDLE_DIR"
ENV_LOCAL_SOURCE_DIR = "THAW_LOCAL_SOURCE_DIR"

CONTAINER_ENV_NAMES: tuple[str, ...] = (
    ENV_CONTAINER_ID,
    ENV_FUNCTION_SPEC,
    ENV_AGENT_SOCKET,
    ENV_SNAPSHOT,
    ENV_RUNTIME_PATHS,
    ENV_BUNDLE_DIR,
    ENV_LOCAL_SOURCE_DIR,
)
