"""Bodies of the gateway's HTTP API (``/v1``), shared by the gateway and the SDK.

Every error is ``{"error": {"code": ..., "message": ...}}`` with one of
``ERROR_CODES``; the OpenAPI document at ``/v1/openapi.json`` is generated
from these Structs.

Routes (all need ``Authorization: Bearer <token>`` of the route's scope except ``/healthz``):

- ``HEAD /v1/bundles/{sha256}``             200 if stored, else 404
- ``PUT  /v1/bundles/{sha256}``             body: the zip; sha256 verified
- ``POST /v1/apps/{app}/deploy``            ``DeployRequest`` -> ``DeployResponse``;
  with ``?progress=1``, NDJSON of ``DeployEvent`` (image builds as they run)
- ``HEAD/PUT /v1/files/{sha256}``           files an image adds (``Image.add_local_*``)
- ``GET  /v1/apps``                         -> ``list[AppInfo]``
- ``POST /v1/apps/{app}/stop``              -> ``AppInfo``
- ``GET  /v1/apps/{app}/logs?follow=1``     -> NDJSON of ``schema.LogLine``
- ``GET  /v1/functions/{app}/{function}``   -> ``FunctionInfo``
- ``POST /v1/functions/{app}/{function}/calls?wait=S``  ``CallRequest`` ->
  200 ``CallResult`` when done within S seconds, else 202 ``CallAccepted``
- ``POST /v1/functions/{app}/{function}/calls:batch``   ``BatchRequest`` -> ``BatchAccepted``
- ``GET  /v1/calls/{call_id}?wait=S``       200 ``CallResult`` or 202 ``CallAccepted``
- ``POST /v1/calls/{call_id}/cancel``       -> ``CallAccepted``
- ``GET  /v1/calls?app=&function=&limit=N``  -> ``CallList`` (newest first)
- ``POST /v1/calls:stream``                 ``StreamRequest`` -> NDJSON of ``CallResult`` as they finish
- ``GET  /v1/containers``, ``POST /v1/containers/{id}/stop``, ``GET /v1/nodes``
- ``POST /v1/tokens``                       ``TokenRequest`` -> ``TokenResponse``;
  ``GET /v1/tokens`` -> ``list[TokenInfo]``; ``POST /v1/tokens/{token_id}/revoke``
- ``POST /v1/secrets``                      ``SecretCreate`` -> ``SecretInfo``;
  ``GET /v1/secrets`` -> ``list[SecretInfo]``; ``DELETE /v1/secrets/{name}``
- ``PUT  /v1/apps/{app}/secrets/{name}``    ``SecretValues`` -> ``SecretInfo`` (a deploy's own values)
- ``GET  /v1/openapi.json``
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from thaw_core.schema import (
    BuildOutput,
    BuildProgress,
    BuildResult,
    CallStatus,
    Codec,
    ContainerInfo,
    FunctionSpec,
    GpuInfo,
    PayloadRef,
)

ERROR_CODES = (
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    # 409 too: what the request names refuses it as it is (a directory read as a file).
    "invalid_state",
    "payload_too_large",
    "timeout",
    "internal",
    # Web endpoints: a websocket upgrade (501), a container that died
    # mid-request (502), none that started in time (503).
    "not_implemented",
    "bad_gateway",
    "unavailable",
    # 429: the fleet has no room for what was asked now (a sandbox).
    "resource_exhausted",
)

# The largest JSON or deploy body the gateway accepts. Call arguments larger
# than that are uploaded (``PUT /v1/payloads/{sha256}``, streamed, up to
# ``Settings.payload_max_bytes``) and named by reference.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ErrorDetail(Body):
    code: str
    message: str


class ErrorBody(Body):
    error: ErrorDetail


class DeployRequest(Body):
    bundle_sha256: str
    functions: list[FunctionSpec]
    # `thaw run`: the app lives for one run and is stopped after it.
    ephemeral: bool = False


class DeployResponse(Body):
    app: str
    version: int
    functions: list[str]
    # Function name -> HTTP URL, for web endpoints.
    web_urls: dict[str, str] = {}
    app_id: str = ""
    # What the deploy could not promise: a function no node can run
    # (fleet_fit); left out when there is nothing to say.
    warnings: list[str] | msgspec.UnsetType = msgspec.UNSET


class ImageBuildStarted(Body, tag="image_build", tag_field="type"):
    """A deploy needs an image that is not built yet: this build makes it."""

    build_id: str
    functions: list[str]
    # One label per step, in order ("pip_install six"): what progress refers to by index.
    steps: list[str]


class DeployFinished(Body, tag="deployed", tag_field="type"):
    response: DeployResponse


class DeployFailed(Body, tag="deploy_failed", tag_field="type"):
    code: str
    message: str
    # When an image build failed: its result (failed step, exit code, log tail).
    build: BuildResult | None = None


# The lines of ``POST /v1/apps/{app}/deploy?progress=1``: builds as they run
# (``BuildProgress``/``BuildOutput`` are the builder's own messages, passed
# through), ending with ``DeployFinished`` or ``DeployFailed``.
DeployEvent = (
    ImageBuildStarted | BuildProgress | BuildOutput | BuildResult | DeployFinished | DeployFailed
)


class AppInfo(Body, kw_only=True):
    # Stable across deploys and stops of the same name ("ap-..."); paths that
    # take {app} take this id too.
    app_id: str = ""
    name: str
    state: Literal["deployed", "stopped"]
    version: int
    functions: list[str]
    ephemeral: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    containers: int = 0
    # Web endpoint (function, or Class.method) -> its URL.
    web_urls: dict[str, str] = {}


class FunctionInfo(Body):
    app: str
    version: int
    spec: FunctionSpec
    # Its URL when it is a web endpoint.
    web_url: str = ""


class AutoscalerUpdate(Body):
    """``Function.update_autoscaler``: the settings given replace the deployed
    function's; the others stay (until the next deploy sets them all)."""

    min_containers: int | None = None
    max_containers: int | None = None
    buffer_containers: int | None = None
    scaledown_window: float | None = None


class CallRequest(Body):
    """``codec="json"`` (the default, for curl and other languages) takes
    ``args``/``kwargs`` as JSON; ``codec="pickle"`` takes ``payload``: the
    cloudpickle of ``(args, kwargs)``, base64 in JSON."""

    codec: Codec = "json"
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    payload: bytes = b""
    # Instead of payload, for a large one: what ``PUT /v1/payloads/{sha256}``
    # answered when it was uploaded (pickle codec).
    payload_ref: PayloadRef | None = None
    method: str | None = None
    params: bytes = b""
    # Optional, base64 (16 to 64 bytes): the call's result key is then derived
    # from it (``result_proof.derive_key(key_seed, call_id)``), so the caller
    # can check the result's proof itself; otherwise the gateway makes the key.
    key_seed: bytes = b""
    # Optional, base64 (16 to 64 bytes), with key_seed: the call's id is then
    # ``result_proof.derive_call_id(key_seed, request_key)``, known to the
    # caller before any answer, and sending the request again (its answer was
    # lost) makes no second call.
    request_key: bytes = b""
    # Set on such a request sent again: a call it made already is not made
    # twice, however long ago (the answer is the call's, as GET /v1/calls/{id}).
    resend: bool = False


class PayloadStored(Body):
    """``PUT /v1/payloads/{sha256}``'s answer: name it as a call's
    ``payload_ref`` (or a batch item) within the hour."""

    ref: PayloadRef


class CallAccepted(Body):
    call_id: str
    status: Literal["pending", "running", "cancelling"] = "pending"
    # What a call that has not started waits for, when something is wrong:
    # "a node that can run it: no node can run gpu=A10G (nodes offer: ...)";
    # left out otherwise.
    waiting_for: str | msgspec.UnsetType = msgspec.UNSET


class CallResult(Body):
    """A call's ``schema.Result`` over HTTP: the same fields by the same
    names, except the return value, which the json codec gives as JSON."""

    call_id: str
    status: CallStatus
    codec: Codec
    # json codec: the return value itself; pickle codec: None, see value_b64.
    value: Any = None
    # pickle codec: the pickled return value (Result.value), base64 in JSON.
    value_b64: bytes = b""
    # A large return value (either codec) is not inline: ``GET
    # /v1/calls/{call_id}/value`` gives its bytes (the codec's encoding).
    value_ref: PayloadRef | None = None
    # Failure: the pickled exception when it pickles, base64 in JSON.
    exc: bytes = b""
    error: str = ""
    traceback: str = ""
    attempts: int = 1
    map_id: str = ""
    index: int = 0
    container_id: str = ""
    started_at: float = 0.0
    finished_at: float = 0.0
    # Result.proof, relayed: a caller that sent key_seed checks it
    # (``result_proof.verifies``) before it trusts the value. The gateway has
    # checked it already; it never hands out a result that does not verify.
    proof: bytes = b""


class BatchRequest(Body):
    """One call per item; each item is encoded like ``CallRequest``'s payload
    (pickle: base64, or for a large one the ``PayloadRef`` its upload
    answered) or is a JSON ``{"args": [...], "kwargs": {...}}`` object."""

    codec: Codec = "json"
    items: list[Any] = []
    method: str | None = None
    params: bytes = b""
    # As CallRequest.key_seed, for every call of the batch.
    key_seed: bytes = b""
    # As CallRequest's: item i's call id is derive_call_id(key_seed, request_key, i).
    request_key: bytes = b""
    resend: bool = False


class BatchAccepted(Body):
    map_id: str
    call_ids: list[str]


class StreamRequest(Body):
    call_ids: list[str]
    # Stop streaming after this long even if results are missing.
    timeout_s: float = 3600.0


class NodeInfo(Body):
    node_id: str
    state: str
    cores: int
    memory_mb: int
    # Each GPU names the container it is given to ('' when free).
    gpus: list[GpuInfo] = []
    last_seen: float = 0.0
    # Its fingerprint class (thaw_core.fingerprint): snapshots are kept per class.
    fingerprint_id: str = ""
    # What its containers have not reserved, and how many it runs (latest heartbeat).
    free_cores: float = 0.0
    free_memory_mb: int = 0
    containers: int = 0


class ContainersResponse(Body):
    containers: list[ContainerInfo]


# What a token may do. ``admin``: everything (tokens too); ``deploy``: deploy
# and stop apps, volumes, secrets (and all that invoke and read may);
# ``invoke``: call functions (of ``apps`` only, when given); ``read``: lists
# and logs. Each route of the gateway names the one it needs.
Scope = Literal["admin", "deploy", "invoke", "read"]
SCOPES: tuple[Scope, ...] = ("admin", "deploy", "invoke", "read")
# The scopes a token of each scope holds.
GRANTS: dict[Scope, frozenset[Scope]] = {
    "admin": frozenset(SCOPES),
    "deploy": frozenset({"deploy", "invoke", "read"}),
    "invoke": frozenset({"invoke"}),
    "read": frozenset({"read"}),
}


class TokenRequest(Body):
    """``POST /v1/tokens``. ``apps``: an invoke token for these apps only;
    ``expires_in_s``: refused after that many seconds (never, unless given)."""

    name: str
    scope: Scope
    apps: list[str] | None = None
    expires_in_s: float | None = None


class TokenInfo(Body):
    """A token as listed: never its value (only its hash is kept)."""

    id: str
    name: str
    scope: Scope
    apps: list[str] | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    state: Literal["active", "expired", "revoked"] = "active"


class TokenResponse(Body):
    """The created token: the one time its value is seen."""

    name: str
    token: str
    id: str = ""
    scope: Scope = "admin"
    apps: list[str] | None = None
    expires_at: float | None = None


class SecretCreate(Body):
    """``POST /v1/secrets``: a named secret's keys and values. ``force``
    replaces one that exists (its new values reach containers as they start
    or are restored)."""

    name: str
    env: dict[str, str]
    force: bool = False


class SecretValues(Body):
    """``PUT /v1/apps/{app}/secrets/{name}``: values a deploy stores for its
    own functions (``Secret.from_dict`` and the like), replaced at each deploy."""

    env: dict[str, str]


class SecretInfo(Body):
    """A secret as listed: never its values."""

    name: str
    keys: list[str]
    created_at: float = 0.0
    updated_at: float = 0.0


class ScheduleInfo(Body):
    """One scheduled function of an app, as ``thaw app show`` lists it."""

    function: str
    # "every 5s" / "cron 0 9 * * * (Europe/Paris)"
    schedule: str
    # When it fires next (None: the app is stopped or ephemeral, so never).
    next_fire_at: float | None = None
    # The latest fire and its call (in the call history); "" when none yet.
    last_fire_at: float | None = None
    last_call_id: str = ""
    # The last run's outcome ("success", "failure", ...), "pending" while it
    # has none yet, "" when it never fired.
    last_status: str = ""


class FunctionDetail(Body):
    """One function (or class) of an app's current version, as ``thaw app
    show`` lists it: what it asks for, how it scales, where it is served and
    how far its memory snapshots cover the fleet."""

    name: str
    kind: str = "function"
    methods: list[str] = []
    cpu: float = 0.0
    memory_mb: int = 0
    gpu: str = ""  # '': none
    timeout_s: float = 0.0
    max_inputs: int = 1
    min_containers: int = 0
    max_containers: int | None = None
    containers: int = 0  # starting, ready or draining now
    schedule: str = ""  # '': not scheduled
    web_url: str = ""  # '': no web endpoint
    memory_snapshot: bool = False  # enable_memory_snapshot
    # Fingerprint classes of the fleet's nodes, and those with a ready
    # snapshot of this version (a restore can happen on those nodes).
    fleet_classes: list[str] = []
    snapshot_classes: list[str] = []
    restores: int = 0


class AppDetail(Body):
    """``GET /v1/apps/{app}``: the app, its functions and its schedules."""

    app: AppInfo
    schedules: list[ScheduleInfo] = []
    functions: list[FunctionDetail] = []


class AppVersion(Body):
    """One deploy of an app: ``thaw app history``."""

    version: int
    created_at: float
    bundle_sha256: str
    functions: list[str]
    current: bool = False  # the version the app runs (or last ran, when stopped)


class AppHistory(Body):
    """``GET /v1/apps/{app}/versions``: every deploy of an app, newest first."""

    app: str
    app_id: str
    versions: list[AppVersion]


class CallSummary(Body):
    """``GET /v1/calls``: one recent call, with its outcome once it has one."""

    call_id: str
    app: str
    function: str
    created_at: float
    # "pending" until its result is stored, then the result's status.
    status: str = "pending"
    started_at: float = 0.0
    finished_at: float = 0.0
    # Seconds from the call's start in its container to its result; 0: not finished.
    duration_s: float = 0.0
    container_id: str = ""
    attempts: int = 0
    error: str = ""
    traceback: str = ""
    map_id: str = ""
    index: int = 0


class CallList(Body):
    calls: list[CallSummary]
