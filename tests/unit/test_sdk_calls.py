"""Calls through the SDK against a fake gateway transport: what a user sees
from .remote(), .spawn(), .map() and friends, class methods and app.run().

The fake speaks the gateway's HTTP API (thaw_core.api) and runs the user's
functions in-process, the way a container would: unpickle the input, call,
pickle the value or the exception with its traceback.
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import cloudpickle
import pytest
import thaw
from fixtures.fake_gateway import FakeGateway, fake_gateway  # noqa: F401 - fake_gateway is a fixture
from thaw.exception import ExecutionError, InvalidError, NotFoundError, RemoteError, TimeoutError
from thaw_core.api import CallResult


class Boom(Exception):
    pass


class Unpicklable(Exception):
    def __init__(self, a: int, b: int) -> None:  # pickles, but cannot be rebuilt
        super().__init__(f"{a}+{b}")


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


# ---------------------------------------------------------------- results' proof


class _CreatesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "w"))


def test_calls_send_a_key_seed_and_their_results_carry_its_proof(gateway: FakeGateway) -> None:
    assert square.remote(3) == 9
    seed = gateway.calls[-1].key_seed
    assert len(seed) == 32
    (call_id,) = [cid for cid in gateway.results if gateway.keys.get(cid)]
    assert gateway._finish(call_id).proof  # the fake signs as an agent does
    assert list(square.map([1, 2])) == [1, 4]
    assert gateway.batches[-1].key_seed == seed  # one seed per client


@pytest.mark.parametrize("signing_key", [b"\0" * 32, b""], ids=["other key", "no proof"])
def test_a_result_whose_proof_fails_is_refused_and_never_unpickled(
    gateway: FakeGateway, tmp_path: Path, signing_key: bytes
) -> None:
    bomb = tmp_path / "unpickled"
    call = square.spawn(5)
    # What a gateway that let a forgery through would hand on.
    gateway.pending.pop(call.object_id)
    gateway.results[call.object_id] = CallResult(
        call_id=call.object_id,
        status="success",
        codec="pickle",
        value_b64=cloudpickle.dumps(_CreatesFile(str(bomb))),
    )
    gateway.keys[call.object_id] = signing_key
    with pytest.raises(ExecutionError, match="does not carry this call's proof"):
        call.get()
    assert not bomb.exists()
    # A call made elsewhere (its key unknown here) relies on the gateway's check.
    gateway.results["fc-elsewhere"] = CallResult(
        call_id="fc-elsewhere", status="success", codec="pickle", value_b64=cloudpickle.dumps(25)
    )
    assert thaw.FunctionCall.from_id("fc-elsewhere").get() == 25
