"""The web inputs of one container: which endpoint each method serves, the
app built for it (once, on its first request), and the requests in flight."""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import Callable
from typing import Any

from thaw_core.container_protocol import Output, RunInput, WebReply, WebSend
from thaw_core.schema import FunctionSpec

from thaw.runtime.codec import encode_value
from thaw.runtime.executor import Callee, Executor, outcome
from thaw.runtime.failure import describe
from thaw.runtime.web.apps import build_app, check_imports
from thaw.runtime.web.exchange import Asgi, Exchange, Send
from thaw.runtime.web.sockets import SocketExchange


def endpoint_options(spec: FunctionSpec) -> dict[str | None, dict[str, Any]]:
    """Method name (None for a function) -> its ``thaw.web`` mark."""
    web = spec.experimental_options.get("web") or {}
    if "kind" in web:
        return {None: web}
    return dict(web.get("methods", {}))


class WebInputs:
    def __init__(self, spec: FunctionSpec, executor: Executor, send: Send) -> None:
        self._options = endpoint_options(spec)
        self._executor = executor
        self._send = send
        self._apps: dict[tuple[str | None, int], asyncio.Task[Asgi]] = {}
        self._exchanges: dict[str, Exchange | SocketExchange] = {}

    def check(self) -> None:
        """At start: what the endpoints need is importable."""
        check_imports(list(self._options.values()))

    def answer(self, frame: WebReply) -> None:
        """On the loop: the agent's reply to one of a request's parts."""
        exchange = self._exchanges.get(frame.request_id)
        if exchange is not None:
            exchange.answer(frame)

    def _app(
        self, method: str | None, target: Callee, instance: object | None
    ) -> asyncio.Task[Asgi]:
        key = (method, id(instance))
        task = self._apps.get(key)
        if task is None or (task.done() and task.exception() is not None):
            option = self._options.get(method)
            if option is None:
                raise LookupError(f"{target.name} is not a web endpoint")
            fn: Callable[..., Any] = (
                target.fn if instance is None else types.MethodType(target.fn, instance)
            )
            task = self._apps[key] = asyncio.create_task(
                build_app(option, fn, self._executor.call), name=f"thaw-web-app:{target.name}"
            )
        return task

    async def serve(
        self, run: RunInput, target: Callee, instance: object | None
    ) -> tuple[Output, WebSend | None]:
        """The input's output, and the part that ends its response (to go with it)."""
        assert run.web is not None
        started_at = time.time()
        building = self._app(run.method, target, instance)

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await (await asyncio.shield(building))(scope, receive, send)

        kind = SocketExchange if run.web.websocket else Exchange
        exchange = kind(run.web, self._send)
        self._exchanges[run.web.request_id] = exchange
        try:
            failed = await exchange.run(app)
        finally:
            del self._exchanges[run.web.request_id]
        last = exchange.last if isinstance(exchange, Exchange) else None
        if failed is not None:
            f = describe(failed)
            output = outcome(
                run.input_id,
                "failure",
                started_at,
                exc=f.exc,
                error=f.error,
                traceback=f.traceback,
            )
            return output, last
        value = encode_value(run.codec, None, target.name)
        return outcome(run.input_id, "success", started_at, value=value), last
