"""``@thaw.batched`` in the runtime, against the agent double: inputs
gathered into batches, results scattered back, a batch's failure shared."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import msgspec
import pytest
from fixtures.agent_double import AgentDouble, make_invoke, value_of
from thaw_core.schema import BatchSpec, FunctionSpec

BATCHED = """
    import asyncio

    import thaw

    app = thaw.App("rt-test")


    @app.function()
    @thaw.batched(max_batch_size=4, wait_ms=100)
    def double(xs, *, scale=[]):
        if "boom" in xs:
            raise ValueError(f"batch of {len(xs)} failed")
        if "short" in xs:
            return xs[:-1]
        return [(x * 2, len(xs)) for x in xs]


    @app.function()
    @thaw.batched(max_batch_size=4, wait_ms=100)
    async def adouble(xs):
        await asyncio.sleep(0)
        return [(x * 2, len(xs)) for x in xs]


    @app.cls()
    class Scaler:
        factor: int = thaw.parameter(default=3)

        @thaw.method()
        @thaw.batched(max_batch_size=4, wait_ms=100)
        def scale(self, xs):
            return [(x * self.factor, len(xs)) for x in xs]
"""


@pytest.fixture
async def batched(tmp_path: Path) -> AgentDouble:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "batched.py").write_text(textwrap.dedent(BATCHED).lstrip())
    (tmp_path / "agent").mkdir()
    double = AgentDouble(tmp_path / "agent", bundle)
    yield double
    await double.stop()


async def start(agent: AgentDouble, qualname: str, **fields: object) -> None:
    spec = FunctionSpec(
        name=qualname,
        module="batched",
        qualname=qualname,
        **fields,  # type: ignore[arg-type]
        max_inputs=4,
        batch=BatchSpec(max_batch_size=4, wait_ms=100),
    )
    ready = await agent.ready(qualname=qualname, spec_json=msgspec.json.encode(spec).decode())
    assert ready.max_inputs == 4


@pytest.mark.parametrize("qualname", ["double", "adouble"])
async def test_inputs_arrive_in_batches_and_each_gets_its_own(
    batched: AgentDouble, qualname: str
) -> None:
    await start(batched, qualname)
    futures = [batched.submit(make_invoke(qualname, i))[1] for i in range(10)]
    results = [value_of(r) for r in await asyncio.wait_for(asyncio.gather(*futures), 60)]
    assert [value for value, _ in results] == [i * 2 for i in range(10)]
    sizes = [size for _, size in results]
    assert max(sizes) <= 4
    assert max(sizes) > 1  # inputs that wait together are called together


async def test_a_batch_failure_reaches_each_caller(batched: AgentDouble) -> None:
    await start(batched, "double")
    futures = [batched.submit(make_invoke("double", x))[1] for x in ["boom", "a", "b", "c"]]
    results = await asyncio.wait_for(asyncio.gather(*futures), 60)
    failed = [r for r in results if r.status == "failure"]
    assert results[0] in failed  # "boom" was in its batch: everyone of that batch fails
    assert {r.error for r in failed} == {f"ValueError: batch of {len(failed)} failed"}
    # The container goes on with the next batch.
    assert value_of(await batched.call(make_invoke("double", 1))) == (2, 1)


async def test_a_result_of_the_wrong_length_fails_each_caller(batched: AgentDouble) -> None:
    await start(batched, "double")
    futures = [batched.submit(make_invoke("double", x))[1] for x in ["short", "a"]]
    results = await asyncio.wait_for(asyncio.gather(*futures), 60)
    assert results[0].status == "failure"
    failed = [r for r in results if r.status == "failure"]
    assert all("must return a list of" in (r.error or "") for r in failed)


async def test_a_batched_method_batches_per_instance(batched: AgentDouble) -> None:
    await start(batched, "Scaler", kind="class", methods=["scale"])
    invokes = [
        make_invoke("Scaler", i, method="scale", params=params)
        for i in range(6)
        for params in (None, {"factor": 10})
    ]
    futures = [batched.submit(invoke)[1] for invoke in invokes]
    results = [value_of(r) for r in await asyncio.wait_for(asyncio.gather(*futures), 60)]
    expected = [i * factor for i in range(6) for factor in (3, 10)]
    assert [value for value, _ in results] == expected
    assert max(size for _, size in results) <= 4
