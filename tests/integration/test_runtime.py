"""The in-container runtime as a real process, against a double of the agent's
side of the socket: started as the agent starts it (``python3 bootstrap.py``,
the runtime's packages on THAW_RUNTIME_PATHS, the bundle, the socket, the
spec in the environment), minus runc. What is checked is what the agent and,
through it, a caller see: frames, results, exit codes, the container's output.
"""

from __future__ import annotations

import asyncio
import pickle
import signal
import statistics
import time
from pathlib import Path

import cloudpickle
import msgspec
import pytest
from fixtures.agent_double import (
    AgentDouble,
    agent,  # noqa: F401 - a fixture
    bundle,  # noqa: F401 - a fixture
    make_invoke,
    value_of,
)
from fixtures.wait import eventually
from thaw_core.container_protocol import (
    CancelInput,
    Hello,
    InitFailed,
    Shutdown,
)


async def test_function_results_by_both_codecs(agent: AgentDouble) -> None:
    ready = await agent.ready(qualname="add")
    assert ready.max_inputs == 1

    result = await agent.call(make_invoke("add", 2, b=40))
    assert value_of(result) == 42
    assert 0 < result.started_at <= result.finished_at <= time.time()

    result = await agent.call(make_invoke("add", "a", "b", codec="json"))
    assert result.codec == "json" and value_of(result) == "ab"


async def test_async_function_and_generators(
    agent: AgentDouble, tmp_path: Path, bundle: Path
) -> None:
    await agent.ready(qualname="async_double")
    assert value_of(await agent.call(make_invoke("async_double", 21))) == 42

    gen = AgentDouble(tmp_path / "gen", bundle)
    (tmp_path / "gen").mkdir()
    try:
        await gen.ready(qualname="countdown")
        assert value_of(await gen.call(make_invoke("countdown", 3))) == [3, 2, 1]
        assert value_of(await gen.call(make_invoke("countdown", 2, codec="json"))) == [2, 1]
    finally:
        await gen.stop()

    agen = AgentDouble(tmp_path / "agen", bundle)
    (tmp_path / "agen").mkdir()
    try:
        await agen.ready(qualname="acount")
        assert value_of(await agen.call(make_invoke("acount", 4))) == [0, 1, 2, 3]
    finally:
        await agen.stop()


async def test_user_exception_reaches_the_caller_and_the_runtime_survives(
    agent: AgentDouble,
) -> None:
    await agent.ready(qualname="fail")
    result = await agent.call(make_invoke("fail", "boom"))
    assert result.status == "failure"
    assert result.error == "ValueError: boom"
    exc = pickle.loads(result.exc)
    assert type(exc) is ValueError and exc.args == ("boom",)
    # The user's frames, as Python prints them, and none of the runtime's.
    tb = result.traceback
    assert tb.startswith("Traceback (most recent call last):")
    assert 'fns.py", line' in tb and "in fail" in tb and "in _deep" in tb
    assert "raise ValueError(msg)" in tb
    assert tb.rstrip().endswith("ValueError: boom")
    assert "thaw/runtime" not in tb and "concurrent/futures" not in tb
    # The container's log shows it too.
    await eventually(
        lambda: any("ValueError: boom" in line for line in agent.stderr), what="log line"
    )

    # The next input runs as if nothing happened.
    assert (await agent.call(make_invoke("fail", "again"))).error == "ValueError: again"


async def test_exceptions_that_do_not_pickle_and_sys_exit(
    agent: AgentDouble, tmp_path: Path, bundle: Path
) -> None:
    await agent.ready(qualname="fail_picky")
    result = await agent.call(make_invoke("fail_picky"))
    # Picky pickles but cannot be rebuilt: the caller gets its text only.
    assert (result.status, result.exc, result.error) == ("failure", b"", "Picky: 1-2")
    assert "raise Picky(1, 2)" in result.traceback

    other = AgentDouble(tmp_path / "exits", bundle)
    (tmp_path / "exits").mkdir()
    try:
        await other.ready(qualname="exits")
        result = await other.call(make_invoke("exits"))
        assert result.status == "failure" and result.error == "SystemExit: 3"
        result = await other.call(make_invoke("exits"))  # still alive
        assert result.error == "SystemExit: 3"
        assert other.proc is not None and other.proc.returncode is None
    finally:
        await other.stop()


async def test_async_exception(agent: AgentDouble) -> None:
    await agent.ready(qualname="async_fail")
    result = await agent.call(make_invoke("async_fail"))
    assert result.status == "failure" and result.error == "KeyError: 'missing'"
    assert isinstance(pickle.loads(result.exc), KeyError)
    assert "in async_fail" in result.traceback and "asyncio" not in result.traceback


async def test_bad_inputs_fail_clearly(agent: AgentDouble) -> None:
    await agent.ready(qualname="add")

    garbage = msgspec.structs.replace(make_invoke("add"), args=b"not a pickle")
    result = await agent.call(garbage)
    assert result.status == "failure"
    assert result.error.startswith("InputDecodeError: could not unpickle the arguments")

    wrong_shape = msgspec.structs.replace(make_invoke("add"), args=cloudpickle.dumps([1, 2, 3]))
    result = await agent.call(wrong_shape)
    assert "pickled arguments must be (args: tuple, kwargs: dict[str, Any])" in result.error

    bad_json = msgspec.structs.replace(make_invoke("add", codec="json"), args=b'{"argz": [1]}')
    result = await agent.call(bad_json)
    assert result.status == "failure" and "bad JSON arguments" in result.error

    result = await agent.call(make_invoke("add", 1, 2, 3))
    assert result.status == "failure" and result.error.startswith("TypeError: add()")

    result = await agent.call(make_invoke("add", 1, method="nope"))
    assert result.status == "failure" and "is a function, not a class" in result.error

    assert value_of(await agent.call(make_invoke("add", 1, 2))) == 3


async def test_unencodable_return_values(agent: AgentDouble, tmp_path: Path, bundle: Path) -> None:
    await agent.ready(qualname="returns_lock")
    result = await agent.call(make_invoke("returns_lock", codec="json"))
    assert result.status == "failure"
    assert "is not JSON-serialisable" in result.error and "fns.returns_lock" in result.error
    result = await agent.call(make_invoke("returns_lock"))
    assert result.status == "failure" and "could not be pickled" in result.error


async def test_print_reaches_the_log_at_once(agent: AgentDouble) -> None:
    await agent.ready(qualname="shout")
    assert value_of(await agent.call(make_invoke("shout", "hey"))) == "HEY"
    # Line-buffered: the line is there while the process still runs.
    await eventually(lambda: "shouting hey" in agent.stdout, timeout_s=2, what="the printed line")
    assert agent.proc is not None and agent.proc.returncode is None


async def test_function_env_is_visible(agent: AgentDouble) -> None:
    await agent.ready(qualname="env_of")
    assert value_of(await agent.call(make_invoke("env_of", "GREETING_ENV"))) == "from-spec"


# ---------------------------------------------------------------- concurrency


async def test_concurrent_inputs_run_at_once(agent: AgentDouble) -> None:
    ready = await agent.ready(qualname="slow", max_inputs=4)
    assert ready.max_inputs == 4
    await agent.call(make_invoke("slow", False))  # warm: the first thread exists

    # Four inputs pass a barrier of four only when they run at once.
    futures = [agent.submit(make_invoke("slow", True))[1] for _ in range(4)]
    results = [value_of(r) for r in await asyncio.wait_for(asyncio.gather(*futures), 90)]
    assert len({thread for thread, _ in results}) == 4  # four threads at once

    # Eight inputs: two groups of four, never more than max_inputs inside.
    futures = [agent.submit(make_invoke("slow", True))[1] for _ in range(8)]
    results = [value_of(r) for r in await asyncio.wait_for(asyncio.gather(*futures), 90)]
    assert max(peak for _, peak in results) == 4


async def test_concurrent_async_inputs(agent: AgentDouble) -> None:
    await agent.ready(qualname="async_slow", max_inputs=4)
    futures = [agent.submit(make_invoke("async_slow", i))[1] for i in range(8)]
    results = [value_of(r) for r in await asyncio.wait_for(asyncio.gather(*futures), 90)]
    assert sorted(group for group, _ in results) == list(range(8))
    assert max(peak for _, peak in results) == 4


# ---------------------------------------------------------------- classes


async def test_class_parameters_and_hooks(agent: AgentDouble) -> None:
    await agent.ready(
        qualname="Greeter", kind="class", methods=["greet", "entered", "entered_at"], max_inputs=4
    )
    ready_at = time.time()

    greet = make_invoke("Greeter", method="greet")
    assert value_of(await agent.call(greet)) == "hello world!"
    # The default instance was entered before Ready.
    entered_at = value_of(await agent.call(make_invoke("Greeter", method="entered_at")))
    assert len(entered_at) == 2 and max(entered_at) <= ready_at

    # Three inputs at once with new parameters share one instance, entered once.
    ada = [make_invoke("Greeter", method="greet", params={"name": "ada"}) for _ in range(3)]
    results = await asyncio.gather(*(agent.call(invoke) for invoke in ada))
    assert [value_of(r) for r in results] == ["hello ada!"] * 3
    json_params = make_invoke("Greeter", "bob", codec="json", method="greet", params={"name": "x"})
    assert value_of(await agent.call(json_params)) == "hello bob!"
    # Parameters that say nothing new are the default instance: no new enter.
    assert (
        value_of(await agent.call(make_invoke("Greeter", method="greet", params={})))
        == "hello world!"
    )

    entered = value_of(await agent.call(make_invoke("Greeter", method="entered")))
    assert entered == [
        ("snap", "world"), ("nosnap", "world"),
        ("snap", "ada"), ("nosnap", "ada"),
        ("snap", "x"), ("nosnap", "x"),
    ]  # fmt: skip

    result = await agent.call(make_invoke("Greeter", method="nope"))
    assert result.status == "failure" and "no @thaw.method() named 'nope'" in result.error
    result = await agent.call(make_invoke("Greeter", method="greet", params={"colour": "red"}))
    assert result.status == "failure" and "unexpected parameter" in result.error

    agent.send(Shutdown(grace_s=5))
    assert await agent.wait_exit() == 0
    assert agent.exit_file.read_text().splitlines() == ["bye world", "bye ada", "bye x"]


async def test_class_with_required_parameters(agent: AgentDouble) -> None:
    await agent.ready(qualname="Keyed", kind="class", methods=["get"])
    assert (
        value_of(await agent.call(make_invoke("Keyed", method="get", params={"key": "k1"}))) == "k1"
    )
    result = await agent.call(make_invoke("Keyed", method="get"))
    assert result.status == "failure" and "missing required parameter" in result.error


async def test_spec_naming_a_missing_method_fails_init(agent: AgentDouble) -> None:
    await agent.start(qualname="Greeter", kind="class", methods=["greet", "vanished"])
    await agent.expect(Hello)
    failed = await agent.expect(InitFailed)
    assert "vanished" in failed.error
    assert await agent.wait_exit() == 1


# ---------------------------------------------------------------- start failures


async def test_module_that_raises_on_import(agent: AgentDouble) -> None:
    await agent.start(qualname="anything", module="broken")
    await agent.expect(Hello)
    failed = await agent.expect(InitFailed)
    assert failed.error == "RuntimeError: no model here"
    assert 'broken.py", line' in failed.traceback and "load_model()" in failed.traceback
    assert "importlib" not in failed.traceback and "thaw/runtime" not in failed.traceback
    assert isinstance(pickle.loads(failed.exc), RuntimeError)
    assert await agent.wait_exit() == 1


async def test_failing_enter_hook(agent: AgentDouble) -> None:
    await agent.start(qualname="Model", module="bad_enter", kind="class", methods=["run"])
    await agent.expect(Hello)
    failed = await agent.expect(InitFailed)
    assert failed.error == "FileNotFoundError: /models/missing.pt"
    assert "in load" in failed.traceback
    assert await agent.wait_exit() == 1


@pytest.mark.parametrize(
    ("qualname", "spec_json", "error"),
    [
        ("nothing_here", None, "has no 'nothing_here'"),
        ("ENTERED", None, "not a function or class"),
        ("Greeter", None, "is a class, but the spec deploys it as a function"),
        (
            "add",
            '{"name": "add", "module": "fns", "qualname": "add", "kind": "class"}',
            "is a function, but the spec deploys it as a class",
        ),
        (
            "add",
            '{"name": "add", "module": "fns", "qualname": "add", "max_inputs": 0}',
            "max_inputs",
        ),
        ("add", '{"name": "add"}', "THAW_FUNCTION_SPEC is not a FunctionSpec"),
    ],
)
async def test_bad_spec_fails_init(
    agent: AgentDouble, qualname: str, spec_json: str | None, error: str
) -> None:
    await agent.start(qualname=qualname, spec_json=spec_json)
    await agent.expect(Hello)
    failed = await agent.expect(InitFailed)
    assert error in failed.error
    assert await agent.wait_exit() == 1


# ---------------------------------------------------------------- cancel, shutdown, agent loss


async def test_cancel_sync_input(agent: AgentDouble, tmp_path: Path) -> None:
    await agent.ready(qualname="gated")
    gate = tmp_path / "gate"
    input_id, future = agent.submit(make_invoke("gated", str(gate)))
    await agent.printed("gated started")
    agent.send(CancelInput(input_id=input_id))
    # Answered while the input still runs, not when it returns.
    assert (await asyncio.wait_for(future, 5)).status == "cancelled"
    # The container takes the next input while the cancelled one still runs.
    assert value_of(await agent.call(make_invoke("sleeper", 0))) == 0
    gate.touch()
    await agent.printed("gated returned")
    # The cancelled input's own result is dropped: the next answer is the next input's.
    assert value_of(await agent.call(make_invoke("sleeper", 0))) == 0
    assert agent.unexpected_outputs == []


async def test_cancels_in_a_row_leave_the_container_responsive(agent: AgentDouble) -> None:
    await agent.ready(qualname="sleeper")
    # A cancel right behind its input, and inputs that never return: each
    # leaves a thread behind, and the container still reads and runs.
    for _ in range(3):
        input_id, future = agent.submit(make_invoke("sleeper", 30))
        agent.send(CancelInput(input_id=input_id))
        assert (await asyncio.wait_for(future, 1)).status == "cancelled"
    assert value_of(await agent.call(make_invoke("sleeper", 0), timeout_s=1)) == 0
    agent.send(Shutdown(grace_s=5))
    assert await agent.wait_exit(3) == 0


async def test_cancel_async_input(agent: AgentDouble) -> None:
    await agent.ready(qualname="async_sleeper")
    input_id, future = agent.submit(make_invoke("async_sleeper", 30))
    await agent.printed("async_sleeper started 30")
    agent.send(CancelInput(input_id=input_id))
    assert (await asyncio.wait_for(future, 1)).status == "cancelled"
    assert value_of(await agent.call(make_invoke("async_sleeper", 0))) == 0
    agent.send(CancelInput(input_id="never-seen"))  # ignored
    assert value_of(await agent.call(make_invoke("async_sleeper", 0))) == 0


async def test_cancel_async_input_that_swallows_it(agent: AgentDouble) -> None:
    await agent.ready(qualname="stubborn")
    input_id, future = agent.submit(make_invoke("stubborn"))
    await agent.printed("stubborn started")
    agent.send(CancelInput(input_id=input_id))
    assert (await asyncio.wait_for(future, 1)).status == "cancelled"
    await agent.printed("stubborn returned")
    # Its result is not sent: the next answer is the next input's (one that
    # fails at once, on its arguments).
    assert (await agent.call(make_invoke("stubborn", 1))).status == "failure"
    assert agent.unexpected_outputs == []


async def test_cancelled_error_raised_by_user_code_is_a_failure(agent: AgentDouble) -> None:
    await agent.ready(qualname="raises_cancelled")
    result = await agent.call(make_invoke("raises_cancelled"))
    assert result.status == "failure" and result.error == "CancelledError: the user's own"


async def test_shutdown_while_enter_hooks_run(agent: AgentDouble) -> None:
    await agent.start(qualname="SlowStart", kind="class", methods=["run"])
    await agent.expect(Hello)
    await agent.printed("SlowStart loading")
    agent.send(Shutdown(grace_s=5))
    assert await agent.wait_exit(5) == 0  # no Ready, no waiting for the 30 s hook
    assert agent.control.empty() or await agent.control.get() is None


async def test_shutdown_waits_for_running_inputs(agent: AgentDouble) -> None:
    await agent.ready(qualname="sleeper")
    _, running = agent.submit(make_invoke("sleeper", 0.5))
    await agent.printed("sleeper started 0.5")
    agent.send(Shutdown(grace_s=5))
    _, late = agent.submit(make_invoke("sleeper", 0))
    assert (await asyncio.wait_for(late, 2)).status == "terminated"
    assert value_of(await asyncio.wait_for(running, 2)) == 0.5
    assert await agent.wait_exit() == 0


async def test_shutdown_grace_expires(agent: AgentDouble) -> None:
    await agent.ready(qualname="sleeper")
    _, running = agent.submit(make_invoke("sleeper", 30))
    await agent.printed("sleeper started 30")
    agent.send(Shutdown(grace_s=0.3))
    # Long before the input's 30 s are up.
    result = await asyncio.wait_for(running, 5)
    assert result.status == "terminated" and "grace period 0.3 s" in result.error
    assert await agent.wait_exit(5) == 0


async def test_sigterm_runs_exit_hooks(agent: AgentDouble) -> None:
    await agent.ready(qualname="Greeter", kind="class", methods=["greet"])
    assert value_of(await agent.call(make_invoke("Greeter", method="greet"))) == "hello world!"
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGTERM)
    assert await agent.wait_exit() == 0
    assert agent.exit_file.read_text() == "bye world\n"


async def test_exits_when_the_agent_goes_away(agent: AgentDouble) -> None:
    await agent.ready(qualname="add")
    await agent.close_connection()
    assert await agent.wait_exit(5) != 0


async def test_agent_loss_skips_exit_hooks(agent: AgentDouble) -> None:
    await agent.ready(qualname="Greeter", kind="class", methods=["greet"])
    await agent.close_connection()
    assert await agent.wait_exit(5) != 0
    assert not agent.exit_file.exists()  # no exit hooks: nothing may run unsupervised


async def test_exits_when_the_agent_goes_away_during_a_blocking_input(agent: AgentDouble) -> None:
    await agent.ready(qualname="sleeper")
    agent.submit(make_invoke("sleeper", 30))
    await agent.printed("sleeper started 30")
    await agent.close_connection()
    assert await agent.wait_exit(5) != 0  # long before the input's 30 s are up


# ---------------------------------------------------------------- hot path


async def test_warm_round_trips_each_answer(agent: AgentDouble) -> None:
    """500 back-to-back inputs on one warm container each get their own result.
    How fast the leg is goes to tests/bench (make bench), not to an assertion:
    a timing asserted here fails on a busy machine."""
    await agent.ready(qualname="add")
    samples = []
    for i in range(500):
        began = time.perf_counter()
        assert value_of(await agent.call(make_invoke("add", i, 1))) == i + 1
        samples.append(time.perf_counter() - began)
    print(f"runtime round trip through the socket: p50 {statistics.median(samples) * 1e6:.0f} us")
