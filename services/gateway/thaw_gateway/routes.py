"""The route table: every endpoint of the gateway, with what it takes and
answers. The server is mounted from it, ``/v1/openapi.json`` is generated
from it, and the tests iterate over it (so a new route cannot forget auth or
the OpenAPI document)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from thaw_core.api import (
    AppDetail,
    AppHistory,
    AppInfo,
    AutoscalerUpdate,
    BatchAccepted,
    BatchRequest,
    CallAccepted,
    CallList,
    CallRequest,
    CallResult,
    ContainersResponse,
    DeployRequest,
    DeployResponse,
    FunctionInfo,
    NodeInfo,
    PayloadStored,
    Scope,
    SecretCreate,
    SecretInfo,
    SecretValues,
    StreamRequest,
    TokenInfo,
    TokenRequest,
    TokenResponse,
)
from thaw_core.schema import (
    CommandReply,
    HealthReply,
    LogLine,
    SnapshotCoverage,
    SnapshotInfo,
    VolumeInfo,
    encode,
)
from thaw_core.schema.sandboxes import ExecOp, ExecReply, SandboxCreated, SandboxList, SandboxSpec
from thaw_core.schema.stores import StoreOp, StoreReply
from thaw_core.variants import FunctionOverrides
from thaw_core.volumes.api import (
    ChunksMissing,
    ChunksRead,
    VolumeCommitBody,
    VolumeCopy,
    VolumeCreate,
    VolumeListing,
    VolumeRemove,
)

from thaw_gateway import (
    app_show,
    autoscaler,
    call_history,
    call_stream,
    call_value,
    calls,
    cluster,
    dashboard,
    deploy,
    metrics,
    payloads,
    sandboxes,
    secrets,
    snapshots,
    stores,
    tokens_api,
    variants,
    volumes,
)
from thaw_gateway.auth import ROUTE_SCOPES
from thaw_gateway.errors import json_response
from thaw_gateway.state import gateway

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

JSON = "application/json"
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class Answer:
    status: int
    description: str
    body: Any = None  # a msgspec type, or None for no body
    media: str = JSON


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    answers: tuple[Answer, ...]
    # The JSON body type; None: no body (or a raw one, see raw_body).
    body: Any = None
    # An empty body stands for {} (every field at its default).
    body_optional: bool = False
    raw_body: str | None = None  # media type of a non-JSON body
    query: tuple[tuple[str, str, str], ...] = ()  # (name, JSON type, description)
    errors: tuple[int, ...] = ()
    public: bool = False
    # The scope a token needs (api.GRANTS says which tokens hold it), or
    # scopes any one of which will do; every route but a public one names
    # one, and auth's middleware checks it.
    scope: Scope | tuple[Scope, ...] | None = None

    def __post_init__(self) -> None:
        if self.public != (self.scope is None):
            raise ValueError(
                f"{self.method} {self.path}: a route is either public or names its scope"
            )

    @property
    def scopes(self) -> frozenset[Scope]:
        """The scopes any one of which lets a token call this route."""
        if self.scope is None:
            return frozenset()
        return frozenset((self.scope,) if isinstance(self.scope, str) else self.scope)

    @property
    def path_params(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


async def healthz(request: web.Request) -> web.Response:
    reply = await gateway(request).health()
    return web.Response(
        body=encode(reply), status=200 if reply.status == "ok" else 503, content_type=JSON
    )


async def openapi_json(request: web.Request) -> web.Response:
    from thaw_gateway.openapi import document

    return json_response(document())


_WAIT = ("wait", "number", "seconds to wait for the result (at most 300); 0: answer at once")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", healthz, "Health of the gateway and its dependencies",
          (Answer(200, "healthy", HealthReply), Answer(503, "degraded", HealthReply)),
          public=True),
    Route("HEAD", "/v1/bundles/{sha256}", deploy.head_bundle, "Is this code bundle stored?",
          (Answer(200, "stored"),), errors=(404,), scope="deploy"),
    Route("PUT", "/v1/bundles/{sha256}", deploy.put_bundle,
          "Upload a code bundle (zip); refused unless it hashes to the sha256 in the path",
          (Answer(201, "stored", deploy.BundleStored),),
          raw_body="application/zip", errors=(413,), scope="deploy"),
    Route("HEAD", "/v1/files/{sha256}", deploy.head_file, "Is this image file stored?",
          (Answer(200, "stored"),), errors=(404,), scope="deploy"),
    Route("PUT", "/v1/files/{sha256}", deploy.put_file,
          "Upload a file an image adds (Image.add_local_*); refused unless it hashes to the"
          " sha256 in the path",
          (Answer(201, "stored", deploy.BundleStored),),
          raw_body="application/octet-stream", errors=(413,), scope="deploy"),
    Route("POST", "/v1/apps/{app}/deploy", deploy.deploy_app,
          "Deploy a new version of an app from an uploaded bundle, building its images first",
          (Answer(200, "deployed (with progress=1: one DeployEvent per line)", DeployResponse),),
          body=DeployRequest,
          query=(("progress", "boolean", "stream image builds: one DeployEvent per line"),),
          errors=(409, 413, 504), scope="deploy"),
    Route("GET", "/v1/apps", deploy.list_apps, "List apps",
          (Answer(200, "the apps", list[AppInfo]),), scope="read"),
    Route("GET", "/v1/apps/{app}", app_show.show_app,
          "An app: its functions (resources, scaling, schedule, endpoint, snapshot coverage)"
          " and each scheduled function's next and last fire and last run",
          (Answer(200, "the app", AppDetail),), errors=(404,), scope="read"),
    Route("GET", "/v1/apps/{app}/versions", app_show.app_history,
          "Every deploy of an app, newest first",
          (Answer(200, "the versions", AppHistory),), errors=(404,), scope="read"),
    Route("POST", "/v1/apps/{app}/stop", deploy.stop_app,
          "Stop an app: its functions take no more calls",
          (Answer(200, "stopped", AppInfo),), errors=(404,), scope="deploy"),
    Route("GET", "/v1/apps/{app}/logs", cluster.app_logs,
          "Container output of an app, as NDJSON lines",
          (Answer(200, "one LogLine per line", LogLine, NDJSON),),
          query=(("follow", "boolean", "keep streaming new lines until the client leaves"),
                 ("function", "string", "only this function's containers")),
          errors=(404,), scope="read"),
    Route("GET", "/v1/functions/{app}/{function}", deploy.get_function,
          "A deployed function's spec (Function.from_name; the dashboard)",
          (Answer(200, "the function", FunctionInfo),), errors=(404, 409),
          scope=("invoke", "read")),
    Route("POST", "/v1/functions/{app}/{function}/autoscaler", autoscaler.update_autoscaler,
          "Change a deployed function's autoscaling settings (until its next deploy)",
          (Answer(200, "the function as updated", FunctionInfo),), body=AutoscalerUpdate,
          body_optional=True, errors=(404, 409), scope="deploy"),
    Route("POST", "/v1/functions/{app}/{function}/variants", variants.create_variant,
          "Register the variant of a deployed function that with_options' overrides make"
          " (idempotent; adding secrets or volumes takes a deploy token); call it by its name",
          (Answer(200, "the variant", FunctionInfo),), body=FunctionOverrides,
          errors=(400, 403, 404, 409), scope="invoke"),
    Route("POST", "/v1/functions/{app}/{function}/calls", calls.create_call,
          "Call a function; with wait=S, answer its result if it finishes within S seconds",
          (Answer(200, "finished", CallResult), Answer(202, "accepted, not finished", CallAccepted)),
          body=CallRequest, body_optional=True, query=(_WAIT,),
          errors=(404, 409, 413, 503, 504),
          scope="invoke"),
    Route("POST", "/v1/functions/{app}/{function}/calls:batch", calls.create_batch,
          "Call a function once per item (map), up to 10,000 items",
          (Answer(200, "accepted", BatchAccepted),), body=BatchRequest,
          errors=(404, 409, 413, 503, 504), scope="invoke"),
    Route("GET", "/v1/calls/{call_id}", calls.get_call, "A call's result",
          (Answer(200, "finished", CallResult), Answer(202, "not finished", CallAccepted)),
          query=(_WAIT,), errors=(404,), scope="invoke"),
    Route("GET", "/v1/calls/{call_id}/value", call_value.get_call_value,
          "The bytes of a call's large return value (its result's value_ref names them), streamed",
          (Answer(200, "the value, codec-encoded", None, "application/octet-stream"),),
          errors=(404,), scope="invoke"),
    Route("PUT", "/v1/payloads/{sha256}", payloads.put_payload,
          "Upload a call's large pickled arguments (streamed; refused unless it hashes to the"
          " sha256 in the path, or over THAW_PAYLOAD_MAX_BYTES); name the answer's ref as the"
          " call's payload_ref or a batch item",
          (Answer(201, "stored", PayloadStored),),
          raw_body="application/octet-stream", errors=(413,), scope="invoke"),
    Route("POST", "/v1/calls/{call_id}/cancel", calls.cancel_call, "Cancel a call",
          (Answer(202, "cancelled", CallAccepted),),
          query=(("terminate", "boolean", "also stop the container running it"),),
          errors=(404, 409), scope="invoke"),
    Route("GET", "/v1/calls", call_history.list_calls,
          "Recent calls, newest first, each with its status, duration and error once finished",
          (Answer(200, "the calls", CallList),),
          query=(("app", "string", "only this app's calls (name or id)"),
                 ("function", "string", "only this function's calls"),
                 ("limit", "integer", "at most this many (default 50, at most 500)")),
          errors=(404,), scope="read"),
    Route("POST", "/v1/calls:stream", call_stream.stream_calls,
          "Results of many calls as NDJSON lines, as each finishes",
          (Answer(200, "one CallResult per line", CallResult, NDJSON),), body=StreamRequest,
          errors=(404, 413), scope="invoke"),
    Route("GET", "/v1/containers", cluster.list_containers, "Containers and their load",
          (Answer(200, "the containers", ContainersResponse),),
          query=(("app", "string", "only this app's containers"),), scope="read"),
    Route("POST", "/v1/containers/{container_id}/stop", cluster.stop_container,
          "Stop a container through its node's agent",
          (Answer(200, "the agent's reply", CommandReply),), errors=(404, 409, 504),
          scope="deploy"),
    Route("POST", "/v1/containers/{container_id}/exec", sandboxes.container_exec,
          "One operation on a container's processes (a tagged ExecOp: start a process, read"
          " its output or write its input by offset, wait for it; a sandbox's tags, end)",
          (Answer(200, "the agent's answer", ExecReply),), body=ExecOp,
          errors=(400, 403, 404, 409, 413, 504), scope="deploy"),
    Route("POST", "/v1/sandboxes", sandboxes.create_sandbox,
          "Start a sandbox: a container running a command, placed by the scheduler",
          (Answer(200, "where it runs", SandboxCreated),), body=SandboxSpec,
          errors=(400, 403, 409, 429, 503, 504), scope="deploy"),
    Route("GET", "/v1/sandboxes", sandboxes.list_sandboxes, "Running sandboxes",
          (Answer(200, "the sandboxes", SandboxList),),
          query=(("app", "string", "only this app's sandboxes"),
                 ("tag", "string", "key=value: only those with this tag (repeatable)")),
          errors=(400, 403), scope="deploy"),
    Route("GET", "/v1/nodes", cluster.list_nodes, "Nodes and their capacity",
          (Answer(200, "the nodes", list[NodeInfo]),), scope="read"),
    Route("GET", "/v1/snapshots", snapshots.list_snapshots,
          "Memory snapshots: per function version and fingerprint class, with their use",
          (Answer(200, "the snapshots", list[SnapshotInfo]),),
          query=(("app", "string", "only this app's snapshots"),), scope="read"),
    # Not under /v1/snapshots/: DELETE /v1/snapshots/{snapshot_id} would match it too.
    Route("GET", "/v1/snapshot-coverage", snapshots.snapshot_coverage,
          "Per snapshot-enabled deployed function: the fleet's fingerprint classes,"
          " and how many a ready snapshot restores on",
          (Answer(200, "the coverage", list[SnapshotCoverage]),),
          query=(("app", "string", "only this app's functions"),), scope="read"),
    Route("DELETE", "/v1/snapshots/{snapshot_id}", snapshots.delete_snapshot,
          "Retire a snapshot: it is no longer restored, and its blob is deleted soon",
          (Answer(200, "retired (state obsolete)", SnapshotInfo),), errors=(404,), scope="deploy"),
    Route("POST", "/v1/tokens", tokens_api.create_token,
          "Create an API token of a scope (admin, deploy, invoke, read), an invoke one"
          " optionally for some apps only, optionally expiring; shown once (only its hash is kept)",
          (Answer(201, "created", TokenResponse),), body=TokenRequest, errors=(400,),
          scope="admin"),
    Route("GET", "/v1/tokens", tokens_api.list_tokens,
          "API tokens: ids, names, scopes, apps, expiry, state; never their values",
          (Answer(200, "the tokens", list[TokenInfo]),), scope="admin"),
    Route("POST", "/v1/tokens/{token_id}/revoke", tokens_api.revoke_token,
          "Revoke a token: refused from now on (by every replica within seconds)",
          (Answer(200, "revoked", TokenInfo),), errors=(404,), scope="admin"),
    Route("POST", "/v1/secrets", secrets.create_secret,
          "Create a named secret (force: replace one that exists); answers its keys, never values",
          (Answer(201, "stored", SecretInfo),), body=SecretCreate, errors=(409,), scope="deploy"),
    Route("GET", "/v1/secrets", secrets.list_secrets, "Named secrets: names, keys, dates",
          (Answer(200, "the secrets", list[SecretInfo]),), scope="read"),
    Route("DELETE", "/v1/secrets/{secret}", secrets.delete_secret, "Delete a named secret",
          (Answer(200, "deleted", SecretInfo),), errors=(404,), scope="deploy"),
    Route("PUT", "/v1/apps/{app}/secrets/{secret}", secrets.put_app_secret,
          "Store values a deploy gives its own functions (Secret.from_dict and the like)",
          (Answer(200, "stored", SecretInfo),), body=SecretValues, scope="deploy"),
    Route("POST", "/v1/volumes", volumes.create_volume,
          "Create a volume (exist_ok: answer the one that exists)",
          (Answer(201, "created (or found, with exist_ok)", VolumeInfo),), body=VolumeCreate,
          errors=(409,), scope="deploy"),
    Route("GET", "/v1/volumes", volumes.list_volumes, "Volumes: versions, sizes, file counts",
          (Answer(200, "the volumes", list[VolumeInfo]),), scope="read"),
    Route("GET", "/v1/volumes/{volume}", volumes.get_volume, "A volume and its current version",
          (Answer(200, "the volume", VolumeInfo),), errors=(404,), scope="read"),
    Route("DELETE", "/v1/volumes/{volume}", volumes.delete_volume,
          "Delete a volume and every version of it",
          (Answer(200, "deleted", VolumeInfo),), errors=(404,), scope="deploy"),
    Route("GET", "/v1/volumes/{volume}/entries", volumes.list_entries,
          "A directory's entries (a file's own), with their chunks",
          (Answer(200, "the entries", VolumeListing),),
          query=(("path", "string", "the directory or file ('' or '/': the root)"),
                 ("recursive", "boolean", "every entry under the directory")),
          errors=(404,), scope="read"),
    Route("GET", "/v1/volumes/{volume}/file", volumes.read_file, "A file's content, streamed",
          (Answer(200, "the file", None, "application/octet-stream"),),
          query=(("path", "string", "the file"),), errors=(404, 409), scope="read"),
    Route("POST", "/v1/volumes/{volume}/commit", volumes.commit,
          "Write files (their chunks stored first) and delete paths, as one new version",
          (Answer(200, "committed", VolumeInfo),), body=VolumeCommitBody,
          errors=(404, 409, 413), scope="deploy"),
    Route("POST", "/v1/volumes/{volume}/remove", volumes.remove,
          "Remove a file, or a directory with recursive",
          (Answer(200, "removed", VolumeInfo),), body=VolumeRemove, errors=(404, 409),
          scope="deploy"),
    Route("POST", "/v1/volumes/{volume}/copy", volumes.copy,
          "Copy files within the volume (no content moves: the copies share chunks)",
          (Answer(200, "copied", VolumeInfo),), body=VolumeCopy, errors=(404, 409, 413),
          scope="deploy"),
    Route("POST", "/v1/volume-chunks:missing", volumes.missing_chunks,
          "Which of these chunks the blob store lacks",
          (Answer(200, "the missing ones", ChunksMissing),), body=ChunksMissing, scope="deploy"),
    Route("POST", "/v1/volume-chunks:read", volumes.read_chunks,
          "Many pieces (small files' chunks, by sha256 or packed reference) in one answer,"
          " one after another in the order asked",
          (Answer(200, "the pieces' bytes", None, "application/octet-stream"),), body=ChunksRead,
          errors=(404, 413), scope="read"),
    Route("PUT", "/v1/volume-packs/{sha256}", volumes.put_pack,
          "Store many small files' content as one pack; refused unless it hashes to the"
          " sha256 in the path. Their entries name their pieces in it",
          (Answer(201, "stored", deploy.BundleStored),),
          raw_body="application/octet-stream", errors=(413,), scope="deploy"),
    Route("HEAD", "/v1/volume-chunks/{chunk}", volumes.head_chunk,
          "Is this chunk (by its sha256 or packed reference) stored?",
          (Answer(200, "stored"),), errors=(404,), scope="deploy"),
    Route("PUT", "/v1/volume-chunks/{chunk}", volumes.put_chunk,
          "Store a chunk of a volume file; refused unless it hashes to the sha256 in the path",
          (Answer(201, "stored", deploy.BundleStored),),
          raw_body="application/octet-stream", errors=(413,), scope="deploy"),
    Route("GET", "/v1/volume-chunks/{chunk}", volumes.get_chunk,
          "A chunk's bytes, by its sha256 or (a small file's) by the packed reference its"
          " file's entry names",
          (Answer(200, "the chunk", None, "application/octet-stream"),), errors=(404,),
          scope="read"),
    Route("PUT", "/v1/store-values/{sha256}", stores.put_value,
          "Keep a Dict value or Queue item too large for the store (refused unless it hashes"
          " to the sha256 in the path); the key or item then holds a reference to it",
          (Answer(201, "stored", deploy.BundleStored),),
          raw_body="application/octet-stream", errors=(413,), scope="deploy"),
    Route("GET", "/v1/store-values/{sha256}", stores.get_value, "A large Dict value's or Queue item's bytes",
          (Answer(200, "the value", None, "application/octet-stream"),), errors=(404,),
          scope="read"),
    Route("POST", "/v1/stores", stores.store_call,
          "One thaw.Dict or thaw.Queue operation (a tagged StoreOp; keys encoded as the"
          " SDK's thaw._stores says, values JSON text or cloudpickle bytes); an operation"
          " that reads needs scope 'read', one that writes scope 'deploy'",
          (Answer(200, "what it read or did", StoreReply),), body=StoreOp,
          errors=(400, 403, 404, 409, 413),
          scope=("deploy", "read")),
    Route("GET", "/metrics", metrics.get_metrics,
          "Prometheus metrics of this gateway process (text exposition format)",
          (Answer(200, "the metrics", str, "text/plain"),), scope="read"),
    Route("GET", dashboard.PAGE_PATH, dashboard.index,
          "The web dashboard (its API calls carry the token typed into it)",
          (Answer(200, "the page", str, "text/html"),), errors=(404,), public=True),
    Route("GET", dashboard.STATIC_PREFIX + "{file}", dashboard.static_file,
          "A script or style of the dashboard", (Answer(200, "the file", str, "text/plain"),),
          errors=(404,), public=True),
    Route("GET", "/v1/openapi.json", openapi_json, "This document",
          (Answer(200, "the OpenAPI 3.1 document", dict[str, Any]),), scope="read"),
)  # fmt: skip


def mount(app: web.Application) -> None:
    scopes: dict[Any, frozenset[Scope] | None] = {}
    for route in ROUTES:
        added = app.router.add_route(route.method, route.path, route.handler)
        scopes[added] = None if route.public else route.scopes
    app[ROUTE_SCOPES] = scopes


def body_types() -> list[Any]:
    """Every type the routes take or answer, for the OpenAPI components."""
    seen: list[Any] = []
    for route in ROUTES:
        for t in (route.body, *(a.body for a in route.answers)):
            if t is not None and t not in seen:
                seen.append(t)
    return seen
