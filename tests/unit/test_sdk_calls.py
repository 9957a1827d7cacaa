"""Calls through the SDK against a fake gateway transport: what a user sees
from .remote(), .spawn(), .map() and friends, class methods and app.run().

The fake speaks the gateway's HTTP API (thaw_core.api) and runs the user's
functions in-process, the way a container would: unpickle the input, call,
pickle the value or the exception with its traceback.
"""

from __future__ import annotations

import asyncio
import pickle
import random
import re
import sys
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import cloudpickle
import msgspec
import pytest
import thaw
from thaw import _cls
from thaw.client import use_transport
from thaw.exception import InvalidError, NotFoundError, RemoteError, TimeoutError
from thaw_core.api import (
    AppInfo,
    BatchAccepted,
    BatchRequest,
    CallAccepted,
    CallRequest,
    CallResult,
    DeployRequest,
    DeployResponse,
    ErrorBody,
    ErrorDetail,
    StreamRequest,
    TokenRequest,
    TokenResponse,
)
from thaw_core.schema import LogLine

enc = msgspec.json.Encoder()


class Boom(Exception):
    pass


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickles, but cannot be rebuilt
        super().__init__(f"{a}+{b}")


def error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, enc.encode(ErrorBody(error=ErrorDetail(code=code, message=message)))


class FakeGateway:
    """The gateway's API over in-process execution. ``shuffle`` streams
    results in random order; ``drop_first_stream`` ends each batch's first
    stream early, as a gateway that restarts would."""

    def __init__(self, *, shuffle: bool = True, drop_first_stream: bool = False) -> None:
        self.apps: dict[str, dict[str, Any]] = {}
        self.results: dict[str, CallResult] = {}
        self.pending: dict[str, Callable[[], CallResult]] = {}
        self.requests: list[tuple[str, str]] = []
        self.calls: list[CallRequest] = []
        self.batches: list[BatchRequest] = []
        self.bundles: dict[str, bytes] = {}
        self.deploys: list[tuple[str, DeployRequest]] = []
        self.stopped: list[str] = []
        self.shuffle = shuffle
        self.drop_first_stream = drop_first_stream
        self.streamed: set[str] = set()
        self._ids = 0

    def serve(self, app: str, *objs: Any) -> None:
        """Make objects callable as if ``app`` were deployed."""
        self.apps.setdefault(app, {}).update({o.spec.name: o for o in objs})

    def _new_id(self) -> str:
        self._ids += 1
        return f"fc-{self._ids:06d}"

    def _run(
        self, call_id: str, target: Any, method: str | None, params: bytes, payload: bytes
    ) -> CallResult:
        args, kwargs = pickle.loads(payload)
        try:
            if method is None:
                value = target.raw_f(*args, **kwargs)
            else:
                instance = _cls.instantiate(target.user_cls, pickle.loads(params) if params else {})
                value = _cls.hooks(target.user_cls).methods[method](instance, *args, **kwargs)
            if hasattr(value, "__next__"):
                value = list(value)
            return CallResult(
                call_id=call_id,
                status="success",
                codec="pickle",
                value_b64=cloudpickle.dumps(value),
            )
        except Exception as e:  # noqa: BLE001 - like the runtime, every failure becomes a result
            try:
                exc = cloudpickle.dumps(e)
                pickle.loads(exc)
            except Exception:  # noqa: BLE001
                exc = b""
            return CallResult(
                call_id=call_id,
                status="failure",
                codec="pickle",
                exc=exc,
                error=f"{type(e).__name__}: {e}",
                traceback="".join(traceback.format_exception(e)),
            )

    def _target(self, app: str, function: str) -> Any:
        target = self.apps.get(app, {}).get(function)
        if target is None:
            raise LookupError(f"no function {function!r} in app {app!r}")
        return target

    def _finish(self, call_id: str) -> CallResult:
        if call_id not in self.results:
            self.results[call_id] = self.pending.pop(call_id)()
        return self.results[call_id]

    async def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        self.requests.append((method, path))
        route, _, query = path.partition("?")
        if m := re.fullmatch(r"/v1/functions/([^/]+)/([^/]+)/calls", route):
            req = msgspec.json.decode(body or b"{}", type=CallRequest)
            self.calls.append(req)
            try:
                target = self._target(m[1], m[2])
            except LookupError as e:
                return error(404, "not_found", str(e))
            call_id = self._new_id()
            self.pending[call_id] = lambda: self._run(
                call_id, target, req.method, req.params, req.payload
            )
            if query == "wait=0":
                return 202, enc.encode(CallAccepted(call_id=call_id))
            return 200, enc.encode(self._finish(call_id))
        if m := re.fullmatch(r"/v1/functions/([^/]+)/([^/]+)/calls:batch", route):
            req = msgspec.json.decode(body or b"", type=BatchRequest)
            self.batches.append(req)
            target = self._target(m[1], m[2])
            ids = []
            for item in req.items:
                call_id = self._new_id()
                payload = msgspec.json.decode(enc.encode(item), type=bytes)
                self.pending[call_id] = lambda cid=call_id, p=payload: self._run(
                    cid, target, req.method, req.params, p
                )
                ids.append(call_id)
            return 200, enc.encode(BatchAccepted(map_id="fm-1", call_ids=ids))
        if m := re.fullmatch(r"/v1/calls/([^/]+)", route):
            if m[1] not in self.pending and m[1] not in self.results:
                return error(404, "not_found", f"no call {m[1]!r} was made")
            if query == "wait=0" and m[1] in self.pending:
                return 202, enc.encode(CallAccepted(call_id=m[1]))
            return 200, enc.encode(self._finish(m[1]))
        if m := re.fullmatch(r"/v1/calls/([^/]+)/cancel", route):
            if m[1] in self.results:
                return error(409, "conflict", f"call {m[1]} already finished; too late to cancel")
            self.pending.pop(m[1], None)
            self.results[m[1]] = CallResult(
                call_id=m[1], status="cancelled", codec="pickle", error="cancelled by the client"
            )
            return 202, enc.encode(CallAccepted(call_id=m[1], status="cancelling"))
        if m := re.fullmatch(r"/v1/bundles/([0-9a-f]{64})", route):
            if method == "HEAD":
                return (200, b"") if m[1] in self.bundles else (404, b"")
            self.bundles[m[1]] = body or b""
            return 201, b"{}"
        if m := re.fullmatch(r"/v1/apps/([^/]+)/deploy", route):
            req = msgspec.json.decode(body or b"", type=DeployRequest)
            if req.bundle_sha256 not in self.bundles:
                return error(400, "bad_request", "bundle not uploaded")
            self.deploys.append((m[1], req))
            # As the runtime does: import the spec's module and find the object it names.
            self.serve(
                m[1], *(_cls.resolve(sys.modules[f.module], f.qualname) for f in req.functions)
            )
            return 200, enc.encode(
                DeployResponse(
                    app=m[1], version=len(self.deploys), functions=[f.name for f in req.functions]
                )
            )
        if m := re.fullmatch(r"/v1/apps/([^/]+)/stop", route):
            # Apps' ids here are "ap-" and their name; the path takes either.
            name = m[1] if m[1] in self.apps else m[1].removeprefix("ap-")
            if name not in self.apps:
                return error(404, "not_found", f"no app named {m[1]!r} is deployed")
            self.stopped.append(name)
            return 200, enc.encode(
                AppInfo(app_id=f"ap-{name}", name=name, state="stopped", version=1, functions=[])
            )
        if route == "/v1/apps":
            infos = [
                AppInfo(
                    app_id=f"ap-{name}",
                    name=name,
                    state="stopped" if name in self.stopped else "deployed",
                    version=1,
                    functions=sorted(objs),
                    containers=len(objs),
                    ephemeral=any(n == name and r.ephemeral for n, r in self.deploys),
                )
                for name, objs in self.apps.items()
            ]
            return 200, enc.encode(infos)
        if route == "/v1/tokens":
            name = msgspec.json.decode(body or b"", type=TokenRequest).name
            return 201, enc.encode(TokenResponse(name=name, token=f"thaw_secret_for_{name}"))
        return error(404, "not_found", f"no such endpoint: {method} {route}")

    async def lines(
        self, method: str, path: str, body: bytes | None = None
    ) -> AsyncIterator[bytes]:
        if path.startswith("/v1/apps/"):
            app = path.split("/")[3]
            for i in range(3):
                yield enc.encode(
                    LogLine(
                        app=app,
                        function="square",
                        container_id="ct-abc",
                        stream="stdout",
                        line=f"line {i}",
                    )
                )
            return
        assert path == "/v1/calls:stream", path
        req = msgspec.json.decode(body or b"", type=StreamRequest)
        ids = list(req.call_ids)
        if self.shuffle:
            random.Random(len(ids)).shuffle(ids)
        first = not (set(ids) & self.streamed)
        self.streamed.update(ids)
        if self.drop_first_stream and first and len(ids) > 1:
            ids = ids[: len(ids) // 2]
        for call_id in ids:
            await asyncio.sleep(0)
            yield enc.encode(self._finish(call_id))

    async def close(self) -> None:
        pass


# ---------------------------------------------------------------- the app under test

app = thaw.App("calls")


@app.function()
def square(x: int) -> int:
    return x * x


@app.function()
def add(a: int, b: int = 0, *, c: int = 0) -> int:
    return a + b + c


@app.function()
def fails(x: int) -> int:
    if x % 3 == 0:
        raise Boom(f"no multiples of three: {x}")
    return x


@app.function()
def fails_oddly() -> None:
    raise Unpicklable(1, 2)


@app.function()
def count(n: int):
    yield from range(n)


@app.function()
def describe(target: thaw.Function | thaw.Cls) -> str:
    return f"{type(target).__name__} {target.app_name}/{target.spec.name}"


@app.cls()
class Greeter:
    greeting: str = thaw.parameter(default="hello")

    @thaw.enter()
    def setup(self) -> None:
        self.suffix = "!"

    @thaw.method()
    def greet(self, name: str) -> str:
        return f"{self.greeting} {name}" + getattr(self, "suffix", "")


@pytest.fixture
def fake_gateway() -> Any:
    fake = FakeGateway()
    with use_transport(fake):
        yield fake


@pytest.fixture
def gateway(fake_gateway: FakeGateway) -> FakeGateway:
    fake_gateway.serve("calls", square, add, fails, fails_oddly, count, describe, Greeter)
    return fake_gateway


# ---------------------------------------------------------------- .remote()


def test_remote_returns_the_value_and_sends_pickled_args(gateway: FakeGateway) -> None:
    assert square.remote(7) == 49
    assert add.remote(1, 2, c=3) == 6
    request = gateway.calls[-1]
    assert request.codec == "pickle" and request.method is None
    assert pickle.loads(request.payload) == ((1, 2), {"c": 3})


def test_remote_reraises_the_original_exception_with_remote_traceback(gateway: FakeGateway) -> None:
    with pytest.raises(Boom, match="no multiples of three: 9") as info:
        fails.remote(9)
    cause = info.value.__cause__
    assert cause is not None and "Traceback" in str(cause) and "fails" in str(cause)
    assert 'raise Boom(f"no multiples of three: {x}")' in str(cause)


def test_exception_that_cannot_be_rebuilt_is_a_remote_error_with_the_text(
    gateway: FakeGateway,
) -> None:
    with pytest.raises(RemoteError) as info:
        fails_oddly.remote()
    assert "Unpicklable: 1+2" in str(info.value)
    assert "Remote traceback" in str(info.value) and "raise Unpicklable(1, 2)" in str(info.value)


def test_unknown_function_is_not_found_with_the_gateways_message(gateway: FakeGateway) -> None:
    ghost = thaw.Function.from_name("calls", "ghost")
    with pytest.raises(NotFoundError, match="no function 'ghost' in app 'calls'"):
        ghost.remote()


def test_from_name_calls_a_deployed_function(gateway: FakeGateway) -> None:
    assert thaw.Function.from_name("calls", "square").remote(3) == 9


def test_remote_aio_from_a_running_event_loop(gateway: FakeGateway) -> None:
    async def main() -> list[int]:
        return list(await asyncio.gather(*(square.remote.aio(i) for i in range(5))))

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


def test_sync_remote_inside_a_running_loop_still_works(gateway: FakeGateway) -> None:
    async def main() -> int:
        return square.remote(4)

    assert asyncio.run(main()) == 16


def test_local_runs_here_without_the_gateway(gateway: FakeGateway) -> None:
    assert square.local(5) == 25
    assert gateway.requests == []


def test_functions_and_classes_travel_as_their_names(gateway: FakeGateway) -> None:
    assert describe.remote(square) == "Function calls/square"
    assert describe.remote(Greeter) == "Cls calls/Greeter"
    assert len(gateway.calls[-1].payload) < 300  # the name, not the app and its code


# ---------------------------------------------------------------- generators


def test_remote_gen_yields_the_items(gateway: FakeGateway) -> None:
    assert list(count.remote_gen(4)) == [0, 1, 2, 3]


def test_remote_on_a_generator_says_to_use_remote_gen(gateway: FakeGateway) -> None:
    with pytest.raises(InvalidError, match="remote_gen"):
        count.remote(3)
    with pytest.raises(InvalidError, match=r"\.remote\(\)"):
        list(square.remote_gen(3))


# ---------------------------------------------------------------- spawn


def test_spawn_then_get(gateway: FakeGateway) -> None:
    call = square.spawn(6)
    assert call.object_id.startswith("fc-")
    assert thaw.FunctionCall.from_id(call.object_id).get() == 36
    assert call.get() == 36


def test_get_with_timeout_zero_on_a_pending_call_raises_timeout(gateway: FakeGateway) -> None:
    call = square.spawn(2)
    with pytest.raises(TimeoutError, match="has not finished"):
        call.get(timeout=0)
    assert call.get() == 4


def test_cancel_makes_get_raise_input_cancellation(gateway: FakeGateway) -> None:
    call = square.spawn(2)
    call.cancel()
    with pytest.raises(thaw.exception.InputCancellation, match="cancelled by the client"):
        call.get()


def test_cancelling_a_finished_call_keeps_its_result(gateway: FakeGateway) -> None:
    call = square.spawn(3)
    assert call.get() == 9
    call.cancel()
    assert call.get() == 9 and thaw.FunctionCall.from_id(call.object_id).get() == 9


def test_gather(gateway: FakeGateway) -> None:
    calls = [square.spawn(i) for i in range(4)]
    assert thaw.FunctionCall.gather(*calls) == [0, 1, 4, 9]


# ---------------------------------------------------------------- map


def test_map_yields_in_input_order_though_results_come_shuffled(gateway: FakeGateway) -> None:
    assert list(square.map(range(200))) == [i * i for i in range(200)]
    # Batches grow (32, 64, 128 ...) so the first results come quickly.
    assert [len(b.items) for b in gateway.batches] == [32, 64, 104]


def test_map_unordered_yields_every_result_once(gateway: FakeGateway) -> None:
    got = list(square.map(range(100), order_outputs=False))
    assert sorted(got) == [i * i for i in range(100)]


def test_map_several_iterables_and_constant_kwargs(gateway: FakeGateway) -> None:
    assert list(add.map([1, 2, 3], [10, 20, 30], kwargs={"c": 100})) == [111, 122, 133]


def test_map_raises_the_first_failure_in_order(gateway: FakeGateway) -> None:
    seen = []
    with pytest.raises(Boom, match="no multiples of three: 3"):
        for value in fails.map(range(1, 10)):
            seen.append(value)  # noqa: PERF402 - the values before the failure
    assert seen == [1, 2]


def test_map_return_exceptions_puts_them_in_place(gateway: FakeGateway) -> None:
    got = list(fails.map(range(1, 7), return_exceptions=True))
    assert got[:2] == [1, 2] and got[3:5] == [4, 5]
    assert isinstance(got[2], Boom) and isinstance(got[5], Boom)
    assert "Traceback" in str(got[2].__cause__)


def test_map_reopens_a_stream_that_ended_early(gateway: FakeGateway) -> None:
    gateway.drop_first_stream = True
    assert list(square.map(range(50))) == [i * i for i in range(50)]


def test_map_of_nothing_sends_nothing(gateway: FakeGateway) -> None:
    assert list(square.map([])) == []
    assert gateway.requests == []


def test_starmap_and_for_each(gateway: FakeGateway) -> None:
    assert list(add.starmap([(1, 2), (3, 4)])) == [3, 7]
    assert add.for_each([1, 2, 3]) is None
    assert len(gateway.batches[-1].items) == 3


def test_map_aio(gateway: FakeGateway) -> None:
    async def main() -> list[int]:
        return [x async for x in square.map.aio(range(10))]

    assert asyncio.run(main()) == [i * i for i in range(10)]


def test_breaking_out_of_a_map_early_is_fine(gateway: FakeGateway) -> None:
    for value in square.map(range(1000)):
        if value > 10:
            break
    assert square.remote(3) == 9


# ---------------------------------------------------------------- classes


def test_class_method_call_sends_method_and_params(gateway: FakeGateway) -> None:
    assert Greeter(greeting="hi").greet.remote("ann") == "hi ann"
    request = gateway.calls[-1]
    assert request.method == "greet"
    assert pickle.loads(request.params) == {"greeting": "hi"}


def test_class_without_params_sends_empty_params(gateway: FakeGateway) -> None:
    assert Greeter().greet.remote("bob") == "hello bob"
    assert gateway.calls[-1].params == b""


def test_class_method_map(gateway: FakeGateway) -> None:
    assert list(Greeter(greeting="yo").greet.map(["a", "b"])) == ["yo a", "yo b"]
    assert gateway.batches[-1].method == "greet"


def test_class_local_runs_enter_hooks(gateway: FakeGateway) -> None:
    assert Greeter().greet.local("x") == "hello x!"


def test_class_bad_parameters_and_methods_are_clear_errors() -> None:
    with pytest.raises(InvalidError, match="unexpected parameter.*'colour'.*greeting"):
        Greeter(colour="red")
    with pytest.raises(InvalidError, match="keyword arguments"):
        Greeter("hi")
    with pytest.raises(
        AttributeError, match="no @thaw.method\\(\\) named 'shout'; its methods: greet"
    ):
        _ = Greeter().shout


def test_cls_from_name(gateway: FakeGateway) -> None:
    assert thaw.Cls.from_name("calls", "Greeter")(greeting="hey").greet.remote("z") == "hey z"


# ---------------------------------------------------------------- app.run()


def test_app_run_deploys_an_ephemeral_app_and_stops_it(gateway: FakeGateway) -> None:
    with app.run():
        name = app.running_name
        assert square.remote(3) == 9
    assert name == "calls"
    deployed, request = gateway.deploys[-1]
    assert deployed == name and request.ephemeral
    assert {f.name for f in request.functions} == {
        "square",
        "add",
        "fails",
        "fails_oddly",
        "count",
        "describe",
        "Greeter",
    }
    assert gateway.stopped == [name]
    assert app.running_name == "calls"


def test_app_run_stops_the_app_when_the_block_raises(gateway: FakeGateway) -> None:
    with pytest.raises(ZeroDivisionError), app.run():
        name = app.running_name
        _ = 1 / 0
    assert gateway.stopped == [name]


def test_second_run_skips_the_bundle_upload(gateway: FakeGateway) -> None:
    with app.run():
        pass
    with app.run():
        pass
    puts = [path for method, path in gateway.requests if method == "PUT"]
    heads = [path for method, path in gateway.requests if method == "HEAD"]
    assert len(puts) == 1 and len(heads) == 2 and heads[0] == heads[1]


def test_async_with_app_run(gateway: FakeGateway) -> None:
    async def main() -> int:
        async with app.run():
            return await square.remote.aio(5)

    assert asyncio.run(main()) == 25
    assert len(gateway.stopped) == 1
