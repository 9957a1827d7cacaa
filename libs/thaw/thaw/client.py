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
from thaw_core.result_proof import call_result_verifies, derive_key
from thaw_core.schema import ContainerInfo, LogLine

from thaw import exception
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

    def __str__(self) -> str:
        return f"{self.app}/{self.function}" + (f".{self.method}" if self.method else "")


def _p(part: str) -> str:
    return quote(part, safe="")


def _wait(seconds: float) -> str:
    return f"{max(0.0, seconds):g}"


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
        self._own_calls: OrderedDict[str, None] = OrderedDict()

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
        if cid in self._own_calls and not call_result_verifies(
            derive_key(self._key_seed, cid), result
        ):
            raise exception.ExecutionError(
                f"the result the gateway gave for call {cid} does not carry this call's proof"
                " (it was not made by the platform for this input); it was not unpickled"
            )
        return result

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

    def _call_answer(self, status: int, data: bytes) -> CallResult | CallAccepted:
        if status == 200:
            return self._checked(self._decode(_call_result, data, "a call result"))
        return self._decode(_call_accepted, data, "a call acceptance")

    # ------------------------------------------------------------ calls

    async def call(
        self, target: CallTarget, payload: bytes, wait_s: float = LONG_POLL_S
    ) -> CallResult | CallAccepted:
        request = CallRequest(
            codec="pickle",
            payload=payload,
            method=target.method,
            params=target.params,
            key_seed=self._key_seed,
        )
        status, data = await self._json(
            "POST",
            f"/v1/functions/{_p(target.app)}/{_p(target.function)}/calls?wait={_wait(wait_s)}",
            request,
            ok=(200, 202),
        )
        answer = self._decode(
            _call_result if status == 200 else _call_accepted, data, "a call's answer"
        )
        self._made([answer.call_id])
        return self._checked(answer) if isinstance(answer, CallResult) else answer

    async def call_status(
        self, call_id: str, wait_s: float = LONG_POLL_S
    ) -> CallResult | CallAccepted:
        status, data = await self._json(
            "GET", f"/v1/calls/{_p(call_id)}?wait={_wait(wait_s)}", ok=(200, 202)
        )
        return self._call_answer(status, data)

    async def cancel(self, call_id: str, *, terminate: bool = False) -> CallAccepted:
        query = "?terminate=1" if terminate else ""
        _, data = await self._json("POST", f"/v1/calls/{_p(call_id)}/cancel{query}", ok=(200, 202))
        return self._decode(_call_accepted, data, "a cancellation")

    async def submit_batch(self, target: CallTarget, payloads: list[bytes]) -> BatchAccepted:
        request = BatchRequest(
            codec="pickle",
            items=payloads,
            method=target.method,
            params=target.params,
            key_seed=self._key_seed,
        )
        _, data = await self._json(
            "POST",
            f"/v1/functions/{_p(target.app)}/{_p(target.function)}/calls:batch",
            request,
            ok=(200, 202),
        )
        accepted = self._decode(_batch_accepted, data, "a batch acceptance")
        if len(accepted.call_ids) != len(payloads):
            raise exception.ServiceError(
                f"the gateway accepted {len(accepted.call_ids)} calls for a batch of {len(payloads)}"
            )
        self._made(accepted.call_ids)
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
            yield self._checked(result)

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
