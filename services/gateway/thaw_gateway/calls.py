"""Calls: the hot path. A call is validated against the in-memory catalog,
encoded as an ``Invoke``, published to its function's INVOKE subject with the
call id as JetStream msg-id, and (with ``?wait=S``) answered by the result the
one ``thaw.result.>`` subscription delivers. No database query on the way.
Polling, cancelling and batches are here too; ``calls:stream`` is in
``call_stream.py``.

The gateway never unpickles: with the pickle codec the SDK's bytes go to the
container as they are and come back as base64.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import nats.errors
from aiohttp import web
from thaw_core.api import (
    BatchAccepted,
    BatchRequest,
    CallAccepted,
    CallRequest,
)
from thaw_core.bus import BatchPublishError, Bus, refusal
from thaw_core.contract import cancel_subject, invoke_subject, result_subject
from thaw_core.result_proof import KeySeed, new_key, result_msg_id, signed
from thaw_core.schema import (
    CancelCall,
    Codec,
    FunctionSpec,
    Invoke,
    JsonArgs,
    PayloadRef,
    Result,
    encode,
)

from thaw_gateway.auth import check_calls
from thaw_gateway.bodies import (
    convert,
    path_id,
    path_name,
    query_flag,
    query_seconds,
    read_body,
)
from thaw_gateway.call_ids import (
    call_id_of,
    check_call_keys,
    key_seed,
    made_before,
    map_id_of,
)
from thaw_gateway.call_log import IssuedCall
from thaw_gateway.errors import (
    ApiError,
    bad_request,
    conflict,
    gateway_timeout,
    json_response,
    not_found,
    too_large,
    unavailable,
)
from thaw_gateway.fleet import waiting_for
from thaw_gateway.payloads import offloaded
from thaw_gateway.results import GatewayStopping, to_call_result
from thaw_gateway.state import Gateway, gateway

log = logging.getLogger("thaw.gateway")

# The longest a request holds on for a result; a client that wants longer polls again.
MAX_WAIT_S = 300.0
MAX_BATCH_ITEMS = 10_000
PUBLISH_TIMEOUT_S = 10.0

_args_encoder = msgspec.json.Encoder()
NDJSON = "application/x-ndjson"


# ---------------------------------------------------------------- building inputs


def check_method(spec: FunctionSpec, method: str | None) -> None:
    if spec.kind == "class":
        methods = ", ".join(spec.methods) or "none"
        if method is None:
            raise bad_request(f"{spec.name!r} is a class: name one of its methods ({methods})")
        if spec.methods and method not in spec.methods:
            raise not_found(f"class {spec.name!r} has no method {method!r}; its methods: {methods}")
    elif method is not None:
        raise bad_request(f"{spec.name!r} is a function, not a class: leave out method")


def encode_args(codec: Codec, args: list[Any], kwargs: dict[str, Any], payload: bytes) -> bytes:
    if codec == "json":
        if payload:
            raise bad_request("payload is for codec 'pickle'; codec 'json' takes args and kwargs")
        return _args_encoder.encode(JsonArgs(args=args, kwargs=kwargs))
    if args or kwargs:
        raise bad_request(
            "codec 'pickle' takes payload (base64 of the pickled (args, kwargs)), not args/kwargs"
        )
    if not payload:
        raise bad_request("codec 'pickle' needs payload: base64 of the pickled (args, kwargs)")
    return payload


def batch_item_args(codec: Codec, item: Any, index: int) -> bytes | PayloadRef:
    where = f"items[{index}]"
    if codec == "json":
        return _args_encoder.encode(convert(item, JsonArgs, where))
    payload = convert(item, bytes | PayloadRef, where)  # type: ignore[arg-type]
    if isinstance(payload, PayloadRef):
        return payload
    if not payload:
        raise bad_request(
            f"{where}: empty; codec 'pickle' items are base64 pickles of (args, kwargs)"
        )
    return payload


def check_size(bus: Bus, data: bytes) -> None:
    limit = bus.max_payload
    if limit and len(data) > limit:
        raise too_large(
            f"the encoded input is {len(data)} bytes, over the bus's message limit of {limit}"
            " bytes (nats-server max_payload): make THAW_PAYLOAD_INLINE_BYTES smaller than it"
            " or keep class parameters small"
        )


def issued(invoke: Invoke) -> IssuedCall:
    return IssuedCall(
        invoke.call_id,
        invoke.app,
        invoke.function,
        invoke.codec,
        invoke.map_id,
        invoke.index,
        invoke.key,
    )


def result_key(seed: KeySeed | None, call_id: str) -> bytes:
    """A new call's result key: from the caller's seed (so it can check the
    result itself), else a fresh random one."""
    return seed.key(call_id) if seed is not None else new_key()


def not_taken(e: nats.errors.Error | TimeoutError | BatchPublishError, what: str) -> ApiError:
    """503 naming the bus's reason when it refused ``what`` (its queue is at
    its limits), 504 when it did not answer."""
    reason = refusal(e)
    if reason is not None:
        return unavailable(f"{what}: the bus refused it ({reason}); try again when it has room")
    return gateway_timeout(f"{what}: the bus did not answer ({e!r})")


async def publish_input(bus: Bus, invoke: Invoke, data: bytes) -> None:
    try:
        await bus.publish(invoke_subject(invoke.app, invoke.function), data, msg_id=invoke.call_id)
    except (nats.errors.Error, TimeoutError) as e:
        raise not_taken(e, f"the input of {invoke.call_id} was not taken") from e


async def publish_inputs(bus: Bus, subject: str, inputs: list[tuple[str, bytes]]) -> None:
    """Publish many inputs pipelined (``Bus.publish_batch``); a retry of the
    whole batch is safe (msg-id = call id)."""
    try:
        await bus.publish_batch(subject, inputs, timeout_s=PUBLISH_TIMEOUT_S + len(inputs) / 1000)
    except BatchPublishError as e:
        raise not_taken(
            e,
            f"{e.taken} of {e.total} inputs were taken (send the batch again:"
            " inputs already taken are not run twice)",
        ) from e


async def wait_result(
    gw: Gateway, call_id: str, key: bytes, fut: asyncio.Future[Result], timeout_s: float
) -> Result | None:
    """The real result within ``timeout_s``, else None (the caller answers 202)."""
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
    except GatewayStopping:
        return None
    except TimeoutError:
        pass
    # Missed by the subscription (NATS reconnected meanwhile)? Look once; if
    # that fails too, "not finished yet" is still a true answer.
    try:
        return await gw.results.stored(call_id, key, trust_memory=False)
    except (nats.errors.Error, TimeoutError):
        return None


def client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


# ---------------------------------------------------------------- handlers


async def _callee(request: web.Request) -> tuple[Gateway, str, str, FunctionSpec]:
    """The gateway, and the live function the path names (404/409 otherwise)."""
    gw = gateway(request)
    app_name, function = path_name(request, "app"), path_name(request, "function")
    _, spec = await gw.catalog.resolve(app_name, function)
    return gw, app_name, function, spec


def _invoke(
    app: str,
    function: str,
    body: CallRequest | BatchRequest,
    args: Invoke,
    *,
    seed: KeySeed | None,
    map_id: str = "",
    index: int = 0,
    created_at: float,
) -> Invoke:
    """A new call's input, with its own call id and result key (``seed``:
    ``key_seed(body)``, keyed once per request)."""
    call_id = call_id_of(body, seed, index)
    return Invoke(
        call_id=call_id,
        app=app,
        function=function,
        method=body.method,
        params=body.params,
        codec=body.codec,
        args=args.args,
        args_ref=args.args_ref,
        map_id=map_id,
        index=index,
        created_at=created_at,
        key=result_key(seed, call_id),
    )


async def create_call(request: web.Request) -> web.Response:
    gw, app_name, function, spec = await _callee(request)
    wait_s = query_seconds(request, "wait", default=0.0, cap=MAX_WAIT_S)
    body = await read_body(request, CallRequest, empty_ok=True)
    check_method(spec, body.method)
    check_call_keys(body)
    if body.payload_ref is not None:
        if body.payload or body.codec != "pickle":
            raise bad_request("payload_ref takes the place of payload, with codec 'pickle'")
        args = await offloaded(gw, body.payload_ref, "payload_ref")
    else:
        encoded = encode_args(body.codec, body.args, body.kwargs, body.payload)
        args = await offloaded(gw, encoded, "the encoded input")
    invoke = _invoke(app_name, function, body, args, seed=key_seed(body), created_at=time.time())
    made = await made_before(gw, body, app_name, function, [invoke.call_id])
    if made:  # a resend of a call made before: its answer, as a poll gets it
        return await answer_call(gw, made[invoke.call_id], wait_s)
    data = encode(invoke)
    check_size(gw.bus, data)
    gw.results.issued([(invoke.call_id, invoke.key)])
    if wait_s <= 0:
        await publish_input(gw.bus, invoke, data)
        gw.calls.record([issued(invoke)])
        return json_response(CallAccepted(call_id=invoke.call_id), 202)
    with gw.results.expect(invoke.call_id, invoke.key) as fut:
        await publish_input(gw.bus, invoke, data)
        gw.calls.record([issued(invoke)])
        result = await wait_result(gw, invoke.call_id, invoke.key, fut, wait_s)
    if result is None:
        return json_response(CallAccepted(call_id=invoke.call_id), 202)
    return json_response(to_call_result(result))


async def create_batch(request: web.Request) -> web.Response:
    gw, app_name, function, spec = await _callee(request)
    body = await read_body(request, BatchRequest)
    if len(body.items) > MAX_BATCH_ITEMS:
        raise too_large(
            f"{len(body.items)} items; a batch takes at most {MAX_BATCH_ITEMS}: split it"
        )
    check_method(spec, body.method)
    check_call_keys(body)
    seed = key_seed(body)
    map_id = map_id_of(body, seed)
    now = time.time()
    items = [batch_item_args(body.codec, item, i) for i, item in enumerate(body.items)]
    invokes = [
        _invoke(
            app_name,
            function,
            body,
            await offloaded(gw, args, f"items[{i}]"),
            seed=seed,
            map_id=map_id,
            index=i,
            created_at=now,
        )
        for i, args in enumerate(items)
    ]
    call_ids = [inv.call_id for inv in invokes]
    made = await made_before(gw, body, app_name, function, call_ids)
    invokes = [inv for inv in invokes if inv.call_id not in made]
    inputs = [(inv.call_id, encode(inv)) for inv in invokes]
    for i, (_, data) in enumerate(inputs):
        try:
            check_size(gw.bus, data)
        except ApiError as e:
            raise too_large(f"items[{i}]: {e.message}") from None
    if inputs:
        gw.results.issued((inv.call_id, inv.key) for inv in invokes)
        await publish_inputs(gw.bus, invoke_subject(app_name, function), inputs)
        gw.calls.record(issued(inv) for inv in invokes)
    return json_response(BatchAccepted(map_id=map_id, call_ids=call_ids))


async def check_call_apps(request: web.Request, gw: Gateway, call_ids: list[str]) -> None:
    """403 (or 404) when this request's token may not invoke these calls' apps."""

    async def apps_of(ids: list[str]) -> dict[str, str]:
        return {cid: call.app for cid, call in (await gw.calls.lookup(ids)).items()}

    await check_calls(request, call_ids, apps_of)


async def get_call(request: web.Request) -> web.Response:
    gw = gateway(request)
    call_id = path_id(request, "call_id")
    await check_call_apps(request, gw, [call_id])
    wait_s = query_seconds(request, "wait", default=0.0, cap=MAX_WAIT_S)
    # The call's record holds its result key: without one, no stored result
    # could be told from a forgery.
    call = await gw.calls.get(call_id)
    if call is None:
        raise not_found(f"no call {call_id!r} was made (or it is older than its retention)")
    return await answer_call(gw, call, wait_s)


async def answer_call(gw: Gateway, call: IssuedCall, wait_s: float) -> web.Response:
    """A made call's result (200), waited for up to ``wait_s``, else 202."""
    call_id = call.call_id
    with gw.results.expect(call_id, call.key) as fut:
        # Memory says "not finished" only to a waiter: a result already stored
        # but not yet delivered reaches it. A plain poll asks the stream.
        stored = await gw.results.stored(call_id, call.key, trust_memory=wait_s > 0)
        if stored is not None:
            return json_response(to_call_result(stored))
        result = await wait_result(gw, call_id, call.key, fut, wait_s) if wait_s > 0 else None
    if result is None:
        waiting = await waiting_for(gw, call.app, call.function) or msgspec.UNSET
        return json_response(CallAccepted(call_id=call_id, waiting_for=waiting), 202)
    return json_response(to_call_result(result))


async def cancel_call(request: web.Request) -> web.Response:
    """Cancel: tell whoever runs it (``thaw.cancel.<id>``) and store a
    ``cancelled`` result under the call's msg-id, so the real result, if it
    comes later, is dropped as a duplicate and every client sees one outcome.
    It is signed with the call's key, as an agent signs a result."""
    gw = gateway(request)
    call_id = path_id(request, "call_id")
    await check_call_apps(request, gw, [call_id])
    terminate = query_flag(request, "terminate")

    async def too_late_or_done(result: Result) -> web.Response:
        if result.status == "cancelled":
            return json_response(CallAccepted(call_id=call_id, status="cancelling"), 202)
        raise conflict(
            f"call {call_id} already finished with status {result.status!r}; too late to cancel"
        )

    call = await gw.calls.get(call_id)
    if call is None:
        raise not_found(f"no call {call_id!r} was made (or it is older than its retention)")
    stored = await gw.results.stored(call_id, call.key)
    if stored is not None:
        return await too_late_or_done(stored)
    await gw.bus.publish_core(
        cancel_subject(call_id), CancelCall(call_id=call_id, terminate_containers=terminate)
    )
    cancelled = Result(
        call_id=call_id,
        status="cancelled",
        codec=call.codec,  # type: ignore[arg-type]
        error="cancelled by the client",
        map_id=call.map_id,
        index=call.index,
    )
    ack = await gw.bus.publish(
        result_subject(call_id),
        signed(call.key, cancelled),
        msg_id=result_msg_id(call.key, call_id),
    )
    if ack.duplicate:
        # A result was stored between our look and our write: it wins.
        stored = await gw.results.stored(call_id, call.key)
        if stored is not None:
            return await too_late_or_done(stored)
    return json_response(CallAccepted(call_id=call_id, status="cancelling"), 202)
