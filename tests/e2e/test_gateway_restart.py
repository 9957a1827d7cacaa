"""The SDK across a gateway killed with kill -9 and started again, on the
real stack: a ``.map()`` over 5,000 inputs gives every result once, in
order, and makes no call twice; ``.remote()`` made while the gateway is down
and ``.spawn()`` + ``.get()`` across the restart answer too. The SDK rides
the outage by itself (thaw._reconnect); the test only restarts the gateway,
as the stack's supervisor would, once the SDK has noticed it gone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import thaw as modal
import thaw._reconnect
from fixtures.platform import Platform
from fixtures.wait import eventually

APP = "gateway-restart"
NODE = "gr-a"
N = 5000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def restart_platform(platform_factory: Callable[..., Any]) -> Platform:
    p: Platform = await platform_factory((NODE,))
    await asyncio.to_thread(p.deploy, "gateway_restart.py")
    return p


@pytest.fixture
def use(restart_platform: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    monkeypatch.setenv("THAW_GATEWAY_URL", restart_platform.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", restart_platform.token)
    return restart_platform


class InThread:
    """Runs ``work`` in a thread; what it returned or raised."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.value = work()
            except BaseException as e:  # noqa: BLE001 - surfaced by result()
                self.error = e

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    async def result(self, timeout_s: float, p: Platform) -> Any:
        await asyncio.to_thread(self.thread.join, timeout_s)
        assert not self.thread.is_alive(), f"still waiting after {timeout_s}s\n{p.logs()}"
        if self.error is not None:
            raise self.error
        return self.value


async def kill_and_restart_gateway(
    p: Platform, waiting: InThread | None = None, while_down: Callable[[], Any] = list
) -> Any:
    """kill -9, ``while_down()``, then start it again once the SDK has found
    it gone (or ``waiting`` or what ``while_down`` returned failed: the
    caller sees why); what ``while_down`` returned."""
    p.procs["gateway"].kill()
    done = while_down()
    threads = [t for t in (waiting, done) if isinstance(t, InThread)]
    await eventually(
        lambda: thaw._reconnect.lost_for() is not None or any(t.error for t in threads),
        120,
        "the SDK noticing the gateway gone",
    )
    p.procs["gateway"].start()
    return done


async def calls_recorded(p: Platform, function: str, n: int) -> bool:
    """Whether the call log holds ``n`` calls of ``function``, each once."""
    conn = await asyncpg.connect(p.base_env["THAW_DATABASE_URL"])
    try:
        row = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT call_id) FROM calls WHERE app = $1 AND function = $2",
            APP,
            function,
        )
    finally:
        await conn.close()
    return (row[0], row[1]) == (n, n)


async def test_a_map_survives_kill_9_of_the_gateway(use: Platform) -> None:
    p = use
    square = modal.Function.from_name(APP, "square")
    got: list[int] = []

    # Grows as results come (list.extend takes them one by one).
    mapper = InThread(lambda: got.extend(square.map(range(N))))
    await eventually(lambda: len(got) >= N // 5 or mapper.error, 600, "a fifth of the results")
    await kill_and_restart_gateway(p, mapper)
    await mapper.result(900, p)
    assert len(got) == N
    assert got == [i * i for i in range(N)]  # every result once, in order
    # No input was submitted twice under another id (the call log may be a
    # moment behind its last results).
    await eventually(lambda: calls_recorded(p, "square", N), 60, "the calls recorded", every_s=0.5)


async def test_remote_and_spawn_get_across_a_restart(use: Platform) -> None:
    p = use
    slow = modal.Function.from_name(APP, "slow")
    assert slow.remote(0, 0) == 1  # a container up, so that the next calls run quickly
    spawned = slow.spawn(41, 3.0)
    # Made while the gateway is down: it waits for it and then runs once.
    remote = await kill_and_restart_gateway(
        p, while_down=lambda: InThread(lambda: slow.remote(9, 0.5))
    )
    assert await remote.result(600, p) == 10
    assert await asyncio.to_thread(spawned.get, 600) == 42
    await eventually(lambda: calls_recorded(p, "slow", 3), 60, "the calls recorded", every_s=0.5)
