"""Sandboxes and container processes over HTTP (``schema.sandboxes``).

``POST /v1/sandboxes`` checks the request and asks the scheduler to place
it (``contract.SANDBOX_PLACE``); ``POST /v1/containers/{id}/exec`` carries
one ``ExecOp`` to the agent running that container
(``thaw.exec.<node>.<id>``, which only that node's agent may serve) once the
caller's token may touch the container's app (its app and node are the
placement's, or the containers table's, then remembered: a container never
changes either);
``GET /v1/sandboxes`` lists the running ones (the containers table, which
heartbeats keep, and each one's tags from its agent).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from typing import NamedTuple

import msgspec
import nats.errors
from aiohttp import web
from thaw_core import contract
from thaw_core.bus import Bus, BusRequestError
from thaw_core.schema import (
    AddLocalDir,
    AddLocalFile,
    AddLocalPythonSource,
    FromDockerfile,
    FunctionSpec,
    ImageRef,
    check_name,
)
from thaw_core.schema.functions import MIN_EPHEMERAL_DISK_MB
from thaw_core.schema.sandboxes import (
    ExecError,
    ExecOp,
    ExecRead,
    ExecReply,
    ExecStart,
    ExecWait,
    ExecWrite,
    PlaceSandbox,
    SandboxCreated,
    SandboxDescribe,
    SandboxList,
    SandboxPlaced,
    SandboxSetTags,
    SandboxSpec,
    SandboxState,
)

from thaw_gateway.auth import PRINCIPAL, check_app
from thaw_gateway.bodies import CONTAINER_ID_RE, path_id, query_name, read_body
from thaw_gateway.catalog import APP_ID_PREFIX
from thaw_gateway.errors import (
    ApiError,
    bad_request,
    conflict,
    gateway_timeout,
    json_response,
    not_found,
    resource_exhausted,
)
from thaw_gateway.images import needs_build, resolve_images
from thaw_gateway.secret_store import ENV_KEY_RE
from thaw_gateway.state import Gateway, gateway

MAX_TIMEOUT_S = 24 * 3600.0
MAX_COMMAND_ARGS = 1024
MAX_TAGS = 64
_LOCAL_STEPS = (AddLocalFile, AddLocalDir, AddLocalPythonSource, FromDockerfile)
PLACE_TIMEOUT_S = 75.0
# Beyond a request's own long-poll: how long the agent may take to answer.
AGENT_MARGIN_S = 10.0
_APPS_KNOWN_MAX = 100_000

_reply = msgspec.json.Decoder(ExecReply)
_placed = msgspec.json.Decoder(SandboxPlaced)
_encoder = msgspec.json.Encoder()


class Placement(NamedTuple):
    """Where a container runs and whose it is."""

    app: str
    node_id: str


# container id -> its placement, as the scheduler placed it or the containers
# table says (never as an agent says: a node's agent speaks only for its node).
_placements: OrderedDict[str, Placement] = OrderedDict()

_SANDBOXES_SQL = """
SELECT container_id, app, node_id FROM containers
WHERE function = $1 AND state IN ('starting', 'ready') AND ($2::text IS NULL OR app = $2)
ORDER BY started_at
"""


def _check_spec(spec: SandboxSpec) -> None:
    try:
        check_name("app", spec.app)
    except ValueError as e:
        raise bad_request(str(e)) from None
    if not 0 < spec.timeout_s <= MAX_TIMEOUT_S:
        raise bad_request(f"timeout must be over 0 and at most {MAX_TIMEOUT_S:g} s")
    if spec.idle_timeout_s is not None and not 0 < spec.idle_timeout_s <= MAX_TIMEOUT_S:
        raise bad_request(f"idle_timeout must be over 0 and at most {MAX_TIMEOUT_S:g} s")
    if len(spec.command) > MAX_COMMAND_ARGS:
        raise bad_request(f"a command of at most {MAX_COMMAND_ARGS} arguments")
    if spec.resources.cpu <= 0 or spec.resources.memory_mb <= 0:
        raise bad_request("cpu and memory must be over 0")
    disk_mb = spec.resources.ephemeral_disk_mb
    if disk_mb is not None and disk_mb < MIN_EPHEMERAL_DISK_MB:
        raise bad_request(f"ephemeral_disk must be at least {MIN_EPHEMERAL_DISK_MB} MiB")
    if spec.workdir and not spec.workdir.startswith("/"):
        raise bad_request(f"workdir must be an absolute path, not {spec.workdir!r}")
    if spec.sandbox_id:
        raise bad_request("sandbox_id is given by the gateway")
    if any("\x00" in arg for arg in (*spec.command, spec.workdir)):
        raise bad_request("a command or workdir cannot hold a NUL byte")
    _check_env(spec.env)
    if spec.resources.gpu:
        raise bad_request("sandboxes with GPUs are not served by thaw yet")
    if len(spec.tags) > MAX_TAGS:
        raise bad_request(f"at most {MAX_TAGS} tags")


async def create_sandbox(request: web.Request) -> web.Response:
    spec = await read_body(request, SandboxSpec)
    _check_spec(spec)
    check_app(request[PRINCIPAL], spec.app)
    sandbox_id = f"sb-{uuid.uuid4().hex[:16]}"
    gw = gateway(request)
    image = await _built(gw, spec) if needs_build(spec.image) else None
    spec = msgspec.structs.replace(spec, sandbox_id=sandbox_id, created_at=time.time(), image=image)
    bus = gw.bus
    try:
        msg = await bus.request(contract.SANDBOX_PLACE, PlaceSandbox(spec=spec), timeout_s=PLACE_TIMEOUT_S)
    except nats.errors.NoRespondersError:
        raise ApiError(503, "unavailable", "no scheduler is running to place the sandbox") from None
    except (nats.errors.TimeoutError, TimeoutError):
        raise gateway_timeout(f"the sandbox was not started within {PLACE_TIMEOUT_S:g}s") from None
    except BusRequestError as e:
        raise ApiError(500, "internal", f"the scheduler failed: {e.error}") from None
    placed = _placed.decode(msg.data)
    if placed.no_room:
        raise resource_exhausted(f"sandbox not started: {placed.error}")
    if placed.error:
        raise conflict(f"sandbox not started: {placed.error}")
    _remember(sandbox_id, Placement(spec.app, placed.node_id))
    return json_response(SandboxCreated(sandbox_id=sandbox_id, node_id=placed.node_id))


async def _built(gw: Gateway, spec: SandboxSpec) -> ImageRef | None:
    """The sandbox's image, built (or found built) as a deploy's images are."""
    assert spec.image is not None
    if any(isinstance(s, _LOCAL_STEPS) for s in spec.image.steps):
        raise bad_request(
            "a sandbox's image cannot add local files or a Dockerfile context yet"
            " (add_local_*, from_dockerfile): deploy a function with it instead"
        )
    as_function = FunctionSpec(name="sandbox", module="", qualname="", image=spec.image)

    async def ignore(_: msgspec.Struct) -> None:
        return None  # the build's progress: no stream to show it on here

    resolved = await resolve_images(gw, spec.app, [as_function], ignore)
    return resolved[0].image


def _remember(container_id: str, placement: Placement) -> None:
    _placements[container_id] = placement
    while len(_placements) > _APPS_KNOWN_MAX:
        _placements.popitem(last=False)


async def ask(
    bus: Bus, node_id: str, container_id: str, op: ExecOp, wait_s: float = 0.0
) -> ExecReply:
    """``op`` answered by the agent of ``node_id``, which runs ``container_id``."""
    subject = contract.container_exec_subject(node_id, container_id)
    try:
        msg = await bus.request(subject, op, timeout_s=wait_s + AGENT_MARGIN_S)
    except nats.errors.NoRespondersError:
        raise not_found(
            f"no container {container_id!r} is running (or it ended a while ago)"
        ) from None
    except (nats.errors.TimeoutError, TimeoutError):
        raise gateway_timeout(f"the agent of container {container_id!r} did not answer") from None
    except BusRequestError as e:
        raise ApiError(500, "internal", f"the agent failed: {e.error}") from None
    reply = _reply.decode(msg.data)
    if isinstance(reply, ExecError):
        status = {"not_found": 404, "conflict": 409}.get(reply.code, 400)
        raise ApiError(status, reply.code or "bad_request", reply.error)
    return reply


_PLACEMENT_SQL = "SELECT app, node_id FROM containers WHERE container_id = $1"


async def _placement(gw: Gateway, container_id: str) -> Placement:
    known = _placements.get(container_id)
    if known is None:
        row = await gw.db.fetchrow(_PLACEMENT_SQL, container_id)
        if row is None:
            raise not_found(f"no container {container_id!r} is running (or it ended a while ago)")
        known = Placement(row["app"], row["node_id"])
        _remember(container_id, known)
    return known


async def container_exec(request: web.Request) -> web.Response:
    cid = path_id(request, "container_id", CONTAINER_ID_RE)
    op: ExecOp = await read_body(request, ExecOp)  # type: ignore[arg-type]
    _check_op(op)
    gw = gateway(request)
    placement = await _placement(gw, cid)
    check_app(request[PRINCIPAL], placement.app)
    wait_s = op.wait_s if isinstance(op, ExecRead | ExecWait) else 0.0
    return json_response(await ask(gw.bus, placement.node_id, cid, op, wait_s))


def _check_env(env: dict[str, str]) -> None:
    bad = [k for k, v in env.items() if not ENV_KEY_RE.match(k) or "\x00" in v]
    if bad:
        raise bad_request(f"invalid environment variable names or values: {bad!r}")


def _check_op(op: ExecOp) -> None:
    """What the OpenAPI document says of an operation's fields (openapi_limits)."""
    match op:
        case ExecStart():
            if not op.argv or any("\x00" in a for a in (*op.argv, op.workdir)):
                raise bad_request("exec needs a command, without NUL bytes in it or its workdir")
            if op.workdir and not op.workdir.startswith("/"):
                raise bad_request(f"workdir must be an absolute path, not {op.workdir!r}")
            if op.timeout_s is not None and op.timeout_s <= 0:
                raise bad_request("an exec's timeout must be over 0 s")
            _check_env(op.env)
        case ExecRead() if op.offset < 0 or op.wait_s < 0 or op.max_bytes < 1:
            raise bad_request("a read's offset and wait are at least 0, max_bytes at least 1")
        case ExecWrite() if op.offset < 0:
            raise bad_request("a write's offset is at least 0")
        case ExecWait() if op.wait_s < 0:
            raise bad_request("a wait is at least 0 s")
        case SandboxSetTags() if len(op.tags) > MAX_TAGS:
            raise bad_request(f"at most {MAX_TAGS} tags")
        case _:
            pass


def _tags_wanted(request: web.Request) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for item in request.query.getall("tag", []):
        key, eq, value = item.partition("=")
        if not key or not eq:
            raise bad_request(f"a tag filter is key=value, not {item!r}")
        wanted[key] = value
    return wanted


async def list_sandboxes(request: web.Request) -> web.Response:
    gw = gateway(request)
    app = query_name(request, "app")
    if app is not None and app.startswith(APP_ID_PREFIX):  # an app's id ("ap-..."), as upstream's app_id
        app = await gw.db.fetchval("SELECT name FROM apps WHERE id = $1", app) or app
    if app is not None:
        check_app(request[PRINCIPAL], app)
    wanted = _tags_wanted(request)
    rows = await gw.db.fetch(_SANDBOXES_SQL, contract.SANDBOX_FUNCTION, app)

    async def describe(node_id: str, cid: str) -> SandboxState | None:
        try:
            state = await ask(gw.bus, node_id, cid, SandboxDescribe())
        except ApiError:
            return None  # ended since the last heartbeat
        return state if isinstance(state, SandboxState) else None

    states = await asyncio.gather(*(describe(r["node_id"], r["container_id"]) for r in rows))
    principal = request[PRINCIPAL]
    shown = [
        s for s in states
        if s is not None and s.returncode is None
        and (principal.apps is None or s.app in principal.apps)
        and all(s.tags.get(k) == v for k, v in wanted.items())
    ]  # fmt: skip
    return json_response(SandboxList(sandboxes=shown))
