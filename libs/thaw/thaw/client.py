"""The gateway's HTTP API (thaw_core.api) from the caller's side: ``Client``,
one method per route, and ``current()``, the one client of this process.

Where the gateway is and which token to send: ``thaw.client_config``. The
HTTP layer, swapped for a fake in unit tests with :func:`use_transport`:
``thaw.transport``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote, urlencode

import msgspec
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
    Scope,
    StreamRequest,
    TokenInfo,
    TokenRequest,
    TokenResponse,
)
from thaw_core.result_proof import KeySeed, call_result_verifies
from thaw_core.schema import ContainerInfo, LogLine, PayloadRef

from thaw import _payloads, exception
from thaw._reconnect import reconnecting
from thaw.client_config import CONFIG_ENV, load_config
from thaw.transport import HttpTransport, Transport, gateway_error

# How long one request waits for a result at the gateway before asking again.
LONG_POLL_S = 50.0
# Calls made by this client whose results it checks itself (the newest).
_OWN_CALLS_MAX = 200_000


# ---------------------------------------------------------------- the API


class CallTarget(NamedTuple):
    """Where an input goes: a function, or a method of a class with its parameters."""

    app: str
    function: str
    method: str | None = None
    params: bytes = b""
    # with_options' overrides (thaw_core.variants.FunctionOverrides, encoded):
    # the input goes to the variant of ``function`` they make.
    options: bytes = b""

    def __str__(self) -> str:
        return f"{self.app}/{self.function}" + (f".{self.method}" if self.method else "")


def _p(part: str) -> str:
    return quote(part, safe="")


def _wait(seconds: float) -> str:
    return f"{max(0.0, seconds):g}"


def new_request_key() -> bytes:
    """What names the calls of one request (``CallRequest.request_key``)."""
    return os.urandom(16)


_encoder = msgspec.json.Encoder()
T = TypeVar("T")
_call_result = msgspec.json.Decoder(CallResult)
_call_accepted = msgspec.json.Decoder(CallAccepted)
_batch_accepted = msgspec.json.Decoder(BatchAccepted)
_deploy_response = msgspec.json.Decoder(DeployResponse)
_app_info = msgspec.json.Decoder(AppInfo)
_app_infos = msgspec.json.Decoder(list[AppInfo])
_app_detail = msgspec.json.Decoder(AppDetail)
_app_history = msgspec.json.Decoder(AppHistory)
_function_info = msgspec.json.Decoder(FunctionInfo)
_containers = msgspec.json.Decoder(ContainersResponse)
_call_list = msgspec.json.Decoder(CallList)
_nodes = msgspec.json.Decoder(list[NodeInfo])
_token_response = msgspec.json.Decoder(TokenResponse)
_token_list = msgspec.json.Decoder(list[TokenInfo])
_token_info = msgspec.json.Decoder(TokenInfo)
_log_line = msgspec.json.Decoder(LogLine)


@functools.cache
def _decoder(answer: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(answer)


class Client:
    """Calls made here send a key seed (``CallRequest.key_seed``): their
    result keys derive from it, so this client checks each such result's
    proof itself before anything unpickles it (the gateway has checked it
    too; a call made elsewhere, ``FunctionCall.from_id``, has only that)."""

    def __init__(self, transport: Transport, token: str | None = None) -> None:
        self.transport = transport
        self._token = token
        self._key_seed = os.urandom(32)
        # Keyed once: every call's id and result key are derived from it.
        self._seed = KeySeed(self._key_seed)
        self._own_calls: OrderedDict[str, None] = OrderedDict()
        self._inline_limit = _payloads.inline_limit()
        # (app, function, overrides) -> the name of the variant registered for them
        self._variants: dict[tuple[str, str, bytes], str] = {}

    def _made(self, call_ids: list[str]) -> None:
        own = self._own_calls
        for cid in call_ids:
            own[cid] = None
        while len(own) > _OWN_CALLS_MAX:
            own.popitem(last=False)

    def _checked(self, result: CallResult) -> CallResult:
        """``result``, when it is not one of this client's calls or its proof
        verifies; otherwise refused, never unpickled."""
        cid = result.call_id
        if cid in self._own_calls and not call_result_verifies(self._seed.key(cid), result):
            raise exception.ExecutionError(
                f"the result the gateway gave for call {cid} does not carry this call's proof"
                " (it was not made by the platform for this input); it was not unpickled"
            )
        return result

    async def _received(self, result: CallResult) -> CallResult:
        """A result as the caller gets it: checked, its large value fetched."""
        result = self._checked(result)
        if result.value_ref is None:
            return result
        return await reconnecting(
            f"fetching the value of call {result.call_id}",
            lambda _: _payloads.fetched(self.transport, result, self._token),
        )

    async def _args(self, payload: bytes, what: str) -> bytes | PayloadRef:
        """Pickled arguments as a request carries them: inline, or uploaded first."""
        if len(payload) <= self._inline_limit:
            return payload
        return await reconnecting(
            f"uploading the arguments of {what}",
            lambda _: _payloads.upload(self.transport, payload, self._token),
        )

    async def _json(
        self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)
    ) -> tuple[int, bytes]:
        data = None if body is None else _encoder.encode(body)
        status, answer = await self.transport.request(method, path, data)
        if status not in ok:
            raise gateway_error(status, answer, token=self._token)
        return status, answer

    def _decode(self, decoder: msgspec.json.Decoder[Any], data: bytes, what: str) -> Any:
        try:
            return decoder.decode(data)
        except msgspec.DecodeError as e:
            raise exception.ServiceError(
                f"the gateway answered {what} that cannot be read: {e}"
            ) from None

    async def json_request(
        self,
        method: str,
        path: str,
        answer: type[T],
        what: str,
        *,
        body: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> T:
        """A request to the gateway's API and its JSON answer as ``answer``
        (``what`` names the answer when it cannot be read): for endpoints
        without a method of their own here."""
        _, data = await self._json(method, path, body, ok)
        return self._decode(_decoder(answer), data, what)  # type: ignore[no-any-return]

    async def _call_answer(self, status: int, data: bytes) -> CallResult | CallAccepted:
        if status == 200:
            return await self._received(self._decode(_call_result, data, "a call result"))
        return self._decode(_call_accepted, data, "a call acceptance")

    # ------------------------------------------------------------ calls

    def call_ids(self, request_key: bytes, count: int = 1) -> list[str]:
        """The ids of the calls a request with ``request_key`` makes."""
        return [self._seed.call_id(request_key, i) for i in range(count)]

    async def _post_keyed(
        self, path: str, request: CallRequest | BatchRequest, what: str
    ) -> tuple[int, bytes]:
        """POST a request that names its calls by its request key until it is
        answered; sent again (``resend``) once a try may have reached the gateway."""
        again = msgspec.structs.replace(request, resend=True)

        async def attempt(resend: bool) -> tuple[int, bytes]:
            try:
                return await self._json("POST", path, again if resend else request, ok=(200, 202))
            except exception.TimeoutError as e:
                # 504: the gateway's bus did not answer (a NATS server lost, its
                # streams electing a leader). The request key makes a resend safe,
                # so this rides it out like a lost gateway. A 503 (a full queue)
                # is an answer, and stays one.
                raise exception.ConnectionError(f"{what}: {e}") from e

        return await reconnecting(what, attempt)

    async def _post_to(
        self, target: CallTarget, tail: str, request: CallRequest | BatchRequest, what: str
    ) -> tuple[int, bytes]:
        """POST to ``/v1/functions/{app}/{function}`` + ``tail`` of the function
        the target's inputs go to: its with_options variant when it has one.
        A variant is registered on first use, and again when a redeploy
        (a new app version, without it) answers 404 for it."""
        for again in (False, True):
            function = await self._function_of(target, fresh=again)
            path = f"/v1/functions/{_p(target.app)}/{_p(function)}{tail}"
            try:
                return await self._post_keyed(path, request, what)
            except exception.NotFoundError:
                if not target.options or again:
                    raise
        raise AssertionError("unreachable")

    async def _function_of(self, target: CallTarget, *, fresh: bool = False) -> str:
        if not target.options:
            return target.function
        key = (target.app, target.function, target.options)
        if fresh or key not in self._variants:
            self._variants[key] = (await self.register_variant(target)).spec.name
        return self._variants[key]

    async def register_variant(self, target: CallTarget) -> FunctionInfo:
        """The variant of the target's function its overrides make, as the gateway stored it."""
        path = f"/v1/functions/{_p(target.app)}/{_p(target.function)}/variants"
        body = msgspec.Raw(target.options)  # already JSON
        _, data = await reconnecting(
            f"registering the with_options variant of {target}",
            lambda _: self._json("POST", path, body),
        )
        return self._decode(_function_info, data, "a function")

    def _named(self, got: list[str], wanted: list[str]) -> None:
        if got != wanted:
            raise exception.ServiceError(
                f"the gateway named {len(got)} calls otherwise than their request key does"
                f" ({got[:1]} for {wanted[:1]}): it would not know them when they are sent again"
            )
        self._made(wanted)

    async def call(
        self,
        target: CallTarget,
        payload: bytes,
        wait_s: float = LONG_POLL_S,
        *,
        request_key: bytes | None = None,
        resend: bool = False,
    ) -> CallResult | CallAccepted:
        """Make a call, sent again across gateway restarts (``thaw._reconnect``)
        under one request key, so that it is made once."""
        key = request_key or new_request_key()
        args = await self._args(payload, f"the call to {target}")
        request = CallRequest(
            codec="pickle",
            payload=args if isinstance(args, bytes) else b"",
            payload_ref=None if isinstance(args, bytes) else args,
            method=target.method,
            params=target.params,
            key_seed=self._key_seed,
            request_key=key,
            resend=resend,
        )
        self._made(self.call_ids(key))
        status, data = await self._post_to(
            target, f"/calls?wait={_wait(wait_s)}", request, f"the call to {target}"
        )
        answer = self._decode(
            _call_result if status == 200 else _call_accepted, data, "a call's answer"
        )
        self._named([answer.call_id], self.call_ids(key))
        return await self._received(answer) if isinstance(answer, CallResult) else answer

    async def call_status(
        self, call_id: str, wait_s: float = LONG_POLL_S
    ) -> CallResult | CallAccepted:
        path = f"/v1/calls/{_p(call_id)}?wait={_wait(wait_s)}"
        status, data = await reconnecting(
            f"waiting for call {call_id}", lambda _: self._json("GET", path, ok=(200, 202))
        )
        return await self._call_answer(status, data)

    async def cancel(self, call_id: str, *, terminate: bool = False) -> CallAccepted:
        path = f"/v1/calls/{_p(call_id)}/cancel" + ("?terminate=1" if terminate else "")
        _, data = await reconnecting(
            f"cancelling call {call_id}", lambda _: self._json("POST", path, ok=(200, 202))
        )
        return self._decode(_call_accepted, data, "a cancellation")

    async def submit_batch(
        self,
        target: CallTarget,
        payloads: list[bytes],
        *,
        request_key: bytes | None = None,
        resend: bool = False,
    ) -> BatchAccepted:
        """Submit one call per payload, sent again across gateway restarts
        under one request key (``resend``: it may have been taken before)."""
        key = request_key or new_request_key()
        what = f"inputs to {target}"
        request = BatchRequest(
            codec="pickle",
            items=[await self._args(p, what) for p in payloads],
            method=target.method,
            params=target.params,
            key_seed=self._key_seed,
            request_key=key,
            resend=resend,
        )
        _, data = await self._post_to(
            target, "/calls:batch", request, f"submitting inputs to {target}"
        )
        accepted = self._decode(_batch_accepted, data, "a batch acceptance")
        self._named(accepted.call_ids, self.call_ids(key, len(payloads)))
        return accepted

    async def stream_results(
        self, call_ids: list[str], timeout_s: float = 3600.0
    ) -> AsyncIterator[CallResult]:
        body = _encoder.encode(StreamRequest(call_ids=call_ids, timeout_s=timeout_s))
        async for line in self.transport.lines("POST", "/v1/calls:stream", body):
            try:
                result = _call_result.decode(line)
            except msgspec.DecodeError:
                # A stream that fails after it started says why in its last line.
                raise gateway_error(500, line, token=self._token) from None
            yield await self._received(result)

    # ------------------------------------------------------------ apps

    async def has_bundle(self, sha256: str) -> bool:
        status, data = await self.transport.request("HEAD", f"/v1/bundles/{_p(sha256)}")
        if status in (200, 204):
            return True
        if status == 404:
            return False
        raise gateway_error(status, data, token=self._token)

    async def put_bundle(self, sha256: str, data: bytes) -> None:
        status, answer = await self.transport.request(
            "PUT", f"/v1/bundles/{_p(sha256)}", data, content_type="application/zip"
        )
        if status not in (200, 201, 204):
            raise gateway_error(status, answer, token=self._token)

    async def deploy(self, app: str, request: DeployRequest) -> DeployResponse:
        _, data = await self._json("POST", f"/v1/apps/{_p(app)}/deploy", request, ok=(200, 201))
        return self._decode(_deploy_response, data, "a deploy response")

    async def apps(self) -> list[AppInfo]:
        _, data = await self._json("GET", "/v1/apps")
        return self._decode(_app_infos, data, "an app list")

    async def app(self, app: str) -> AppDetail:
        """One app with its schedules (``thaw app show``)."""
        _, data = await self._json("GET", f"/v1/apps/{_p(app)}")
        return self._decode(_app_detail, data, "an app")

    async def app_history(self, app: str) -> AppHistory:
        """Every deploy of an app, newest first (``thaw app history``)."""
        _, data = await self._json("GET", f"/v1/apps/{_p(app)}/versions")
        return self._decode(_app_history, data, "an app's versions")

    async def stop_app(self, app: str) -> AppInfo:
        _, data = await self._json("POST", f"/v1/apps/{_p(app)}/stop")
        return self._decode(_app_info, data, "an app")

    async def app_logs(
        self, app: str, *, follow: bool = False, function: str | None = None
    ) -> AsyncIterator[LogLine]:
        query = [("follow", "1")] if follow else []
        if function:
            query.append(("function", function))
        path = f"/v1/apps/{_p(app)}/logs" + (f"?{urlencode(query)}" if query else "")
        async for line in self.transport.lines("GET", path):
            yield self._decode(_log_line, line, "a log line")

    async def function_info(self, app: str, function: str) -> FunctionInfo:
        _, data = await self._json("GET", f"/v1/functions/{_p(app)}/{_p(function)}")
        return self._decode(_function_info, data, "a function")

    async def update_autoscaler(self, app: str, function: str, body: AutoscalerUpdate) -> None:
        await self._json("POST", f"/v1/functions/{_p(app)}/{_p(function)}/autoscaler", body)

    # ------------------------------------------------------------ fleet

    async def containers(self, app: str | None = None) -> list[ContainerInfo]:
        _, data = await self._json(
            "GET", "/v1/containers" + (f"?{urlencode({'app': app})}" if app else "")
        )
        return self._decode(_containers, data, "a container list").containers

    async def recent_calls(
        self, app: str | None = None, function: str | None = None, limit: int = 50
    ) -> CallList:
        """Recent calls, newest first, with their outcome (``thaw call list``)."""
        query = {"limit": str(limit), **({"app": app} if app else {})}
        query |= {"function": function} if function else {}
        _, data = await self._json("GET", f"/v1/calls?{urlencode(query)}")
        return self._decode(_call_list, data, "a call list")

    async def stop_container(self, container_id: str) -> None:
        await self._json("POST", f"/v1/containers/{_p(container_id)}/stop", ok=(200, 202, 204))

    async def nodes(self) -> list[NodeInfo]:
        _, data = await self._json("GET", "/v1/nodes")
        return self._decode(_nodes, data, "a node list")

    async def create_token(
        self,
        name: str,
        scope: Scope,
        *,
        apps: list[str] | None = None,
        expires_in_s: float | None = None,
    ) -> TokenResponse:
        """A new token of ``scope`` (an invoke one for ``apps`` only, if
        given); its value is in the answer, and never again."""
        req = TokenRequest(name=name, scope=scope, apps=apps, expires_in_s=expires_in_s)
        _, data = await self._json("POST", "/v1/tokens", req, ok=(200, 201))
        return self._decode(_token_response, data, "a token")

    async def list_tokens(self) -> list[TokenInfo]:
        _, data = await self._json("GET", "/v1/tokens")
        return self._decode(_token_list, data, "a token list")

    async def revoke_token(self, token_id: str) -> TokenInfo:
        _, data = await self._json("POST", f"/v1/tokens/{_p(token_id)}/revoke")
        return self._decode(_token_info, data, "a token")


# ---------------------------------------------------------------- the current client

_lock = threading.Lock()
_current: tuple[tuple[str | None, ...], Client] | None = None
_override: Client | None = None


def current() -> Client:
    """The client for the environment as it is now. Re-read cheaply on each
    call, so that a process (a test session) may point at another gateway."""
    global _current
    if _override is not None:
        return _override
    key = tuple(os.environ.get(name) for name in CONFIG_ENV)
    found = _current
    if found is not None and found[0] == key:
        return found[1]
    with _lock:
        if _current is None or _current[0] != key:
            if _current is not None:
                _close_soon(_current[1])
            config = load_config()
            _current = (key, Client(HttpTransport(config), token=config.token))
        return _current[1]


def _close_soon(client: Client) -> None:
    from thaw._sync import background_loop

    loop = background_loop().loop
    loop.call_soon_threadsafe(lambda: loop.create_task(client.transport.close()))


@atexit.register
def _close_at_exit() -> None:
    # Close the session politely (no "Unclosed client session" warning) if one was opened.
    from thaw._sync import started_loop

    bg = started_loop()
    if bg is None or _current is None:
        return
    import asyncio

    transport = _current[1].transport
    with contextlib.suppress(Exception):
        bg.run(asyncio.wait_for(transport.close(), 2.0))


@contextlib.contextmanager
def use_transport(transport: Transport) -> Iterator[Client]:
    """Send every call of the block through ``transport`` (tests)."""
    global _override
    previous, _override = _override, Client(transport, token="test")
    try:
        yield _override
    finally:
        _override = previous
