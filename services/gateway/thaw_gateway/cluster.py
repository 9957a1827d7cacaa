"""What runs where: containers and nodes (as the scheduler and agents record
them in Postgres), stopping a container through its node's agent, and an
app's container output from the LOGS stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec
import nats.errors
from aiohttp import web
from thaw_core import contract
from thaw_core.api import ContainersResponse, NodeInfo
from thaw_core.bus import BusRequestError
from thaw_core.fingerprint import fingerprint_id
from thaw_core.schema import (
    CommandReply,
    ContainerInfo,
    Fingerprint,
    GpuInfo,
    LogLine,
    StopContainer,
)

from thaw_gateway.bodies import CONTAINER_ID_RE, path_id, path_name, query_flag, query_name
from thaw_gateway.calls import NDJSON, client_gone
from thaw_gateway.errors import (
    ApiError,
    conflict,
    error_line,
    gateway_timeout,
    json_response,
    not_found,
)
from thaw_gateway.state import gateway

log = logging.getLogger("thaw.gateway")

AGENT_TIMEOUT_S = 15.0
# How often an idle log follower checks that its client is still there.
_FOLLOW_POLL_S = 1.0

_reply_decoder = msgspec.json.Decoder(CommandReply)
_log_decoder = msgspec.json.Decoder(LogLine)


# ---------------------------------------------------------------- containers

_CONTAINERS_SQL = """
SELECT container_id, app, function, version, node_id, state, inflight, max_inputs, restored, error,
       coalesce(extract(epoch FROM started_at), 0)::float8 AS started_at,
       coalesce(extract(epoch FROM idle_since), 0)::float8 AS idle_since
FROM containers
WHERE $1::text IS NULL OR app = $1
ORDER BY app, function, container_id
"""


async def list_containers(request: web.Request) -> web.Response:
    app = query_name(request, "app")
    rows = await gateway(request).db.fetch(_CONTAINERS_SQL, app)
    # Built without validation on purpose: a state this gateway does not know
    # yet (a newer scheduler) is shown as it is rather than failing the list.
    containers = [ContainerInfo(**dict(row)) for row in rows]
    return json_response(ContainersResponse(containers=containers))


async def stop_container(request: web.Request) -> web.Response:
    gw = gateway(request)
    cid = path_id(request, "container_id", CONTAINER_ID_RE)
    node_id = await gw.db.fetchval("SELECT node_id FROM containers WHERE container_id = $1", cid)
    if node_id is None:
        raise not_found(f"no container {cid!r}")
    command = StopContainer(container_id=cid, reason="stopped through the API")
    try:
        msg = await gw.bus.request(contract.agent_command_subject(node_id), command, timeout_s=AGENT_TIMEOUT_S)
    except nats.errors.NoRespondersError:
        raise gateway_timeout(f"the agent of node {node_id!r} is not connected") from None
    except (nats.errors.TimeoutError, TimeoutError):
        raise gateway_timeout(
            f"the agent of node {node_id!r} did not answer within {AGENT_TIMEOUT_S:g}s"
        ) from None
    except BusRequestError as e:
        raise ApiError(500, "internal", f"the agent of node {node_id!r} failed: {e.error}") from None
    try:
        reply = _reply_decoder.decode(msg.data)
    except msgspec.DecodeError as e:
        raise ApiError(500, "internal", f"the agent of node {node_id!r} answered {e}") from None
    if not reply.ok:
        raise conflict(f"the agent of node {node_id!r} refused: {reply.error}")
    return json_response(reply)


# ---------------------------------------------------------------- nodes

_NODES_SQL = """
SELECT id, state, inventory, extract(epoch FROM last_seen)::float8 AS last_seen
FROM nodes ORDER BY id
"""


def node_class(inventory: Any) -> str:
    """The fingerprint class of a node's latest heartbeat ('' when it has none)."""
    fingerprint = inventory.get("fingerprint") if isinstance(inventory, dict) else None
    try:
        return fingerprint_id(msgspec.convert(fingerprint, Fingerprint)) if fingerprint else ""
    except msgspec.ValidationError:
        return ""  # a newer agent's fingerprint: shown without a class rather than failing


def _node_info(row: Any) -> NodeInfo:
    inventory = row["inventory"] if isinstance(row["inventory"], dict) else {}
    try:
        gpus = msgspec.convert(inventory.get("gpus") or [], list[GpuInfo])
    except msgspec.ValidationError:
        gpus = []
    return NodeInfo(
        node_id=row["id"],
        state=row["state"],
        cores=int(inventory.get("cores") or 0),
        memory_mb=int(inventory.get("memory_mb") or 0),
        gpus=gpus,
        last_seen=row["last_seen"],
        fingerprint_id=node_class(inventory),
        free_cores=float(inventory.get("free_cores") or 0.0),
        free_memory_mb=int(inventory.get("free_memory_mb") or 0),
        containers=len(inventory.get("containers") or []),
    )


async def list_nodes(request: web.Request) -> web.Response:
    rows = await gateway(request).db.fetch(_NODES_SQL)
    return json_response([_node_info(row) for row in rows])


# ---------------------------------------------------------------- logs


async def _stored_count(request: web.Request, subject: str) -> int:
    return await gateway(request).bus.stored_count(subject)


async def app_logs(request: web.Request) -> web.StreamResponse:
    """NDJSON of ``LogLine``: what is stored (24 h), then, with ``follow=1``,
    new lines as they come until the client goes away. ``function=`` narrows
    it to one function."""
    gw = gateway(request)
    app = (await gw.catalog.get_app(path_name(request, "app"))).name
    follow = query_flag(request, "follow")
    function = query_name(request, "function")
    subject = contract.logs_subject(app, function or None)
    stored = await _stored_count(request, subject)

    resp = web.StreamResponse(headers={"Content-Type": NDJSON})
    await resp.prepare(request)
    if not stored and not follow:
        await resp.write_eof()
        return resp
    sub = await gw.bus.follow(subject)
    try:
        caught_up = not stored
        while not gw.stopping.is_set():
            if caught_up and not follow:
                break
            try:
                msg = await sub.next_msg(timeout=_FOLLOW_POLL_S)
            except (nats.errors.TimeoutError, TimeoutError):
                if client_gone(request):
                    break
                continue
            chunk = _log_chunk(msg)
            caught_up = caught_up or msg.metadata.num_pending == 0
            # Gather what is already here into one write.
            while sub.pending_msgs and not (caught_up and not follow):
                msg = await sub.next_msg(timeout=0.01)
                chunk += _log_chunk(msg)
                caught_up = caught_up or msg.metadata.num_pending == 0
            if chunk:
                await resp.write(chunk)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as e:  # headers are sent: report in-band
        log.exception("log stream of %s failed", app)
        await resp.write(error_line("internal", f"log stream failed: {e!r}"))
    finally:
        await asyncio.shield(_unsubscribe(sub))
    if not client_gone(request):
        await resp.write_eof()
    return resp


def _log_chunk(msg: Any) -> bytes:
    try:
        _log_decoder.decode(msg.data)
    except msgspec.DecodeError as e:
        log.warning("skipping a malformed log line on %s: %s", msg.subject, e)
        return b""
    return bytes(msg.data) + b"\n"


async def _unsubscribe(sub: Any) -> None:
    # Failing is harmless: the ephemeral consumer expires on its own.
    with contextlib.suppress(Exception):
        await sub.unsubscribe()
