"""A cold function's first input wakes the scheduler at once (no tick to
wait for), through the scheduler's own NATS grants; a function with a
container no longer reaches the scheduler per input."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fixtures.nats import role_creds
from fixtures.wait import eventually
from thaw_core import contract, permissions
from thaw_core.bus import Bus
from thaw_scheduler.first_input import FirstInputs


@pytest.fixture
async def scheduler_bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(
        nats_url, name="test-scheduler", creds=Path(role_creds(permissions.SCHEDULER)),
        connect_timeout_s=10,
    )  # fmt: skip
    try:
        yield b
    finally:
        await b.close(grace_s=1)


async def test_the_first_input_of_a_cold_function_wakes_and_a_warm_one_does_not(
    scheduler_bus: Bus, bus: Bus
) -> None:
    app = f"wake-{uuid.uuid4().hex[:8]}"
    cold, warm = (app, "cold"), (app, "warm")
    wake = asyncio.Event()
    watch = FirstInputs(scheduler_bus, wake)
    deployed = frozenset({cold, warm})
    await watch.watch(deployed, frozenset({warm}))

    async def delivered() -> None:
        """What was sent has reached the scheduler's connection, and its
        callbacks have had their turn (a missed wake would show as a pass,
        never as a failure)."""
        await bus.nc.flush()
        await scheduler_bus.subscriptions_live()
        await asyncio.sleep(0.2)

    await bus.publish_core(contract.invoke_subject(*warm), b"{}")
    await delivered()
    assert not wake.is_set()

    await bus.publish_core(contract.invoke_subject(*cold), b"{}")
    await eventually(wake.is_set, 10, "woken by the cold function's first input")

    # Once it has a container, its inputs no longer reach the scheduler.
    wake.clear()
    await watch.watch(deployed, frozenset({cold, warm}))
    await bus.publish_core(contract.invoke_subject(*cold), b"{}")
    await delivered()
    assert not wake.is_set()
    assert scheduler_bus.nc.last_error is None  # no permission refused
    # INVOKE stored what was published: leave the session's stream as found.
    await bus.js.purge_stream(
        contract.INVOKE_STREAM.name, subject=contract.invoke_subject(app, "*")
    )
