"""The runtime's max_inputs slots, shared by reader threads and the loop:
never more taken than opened, waiters served in order, no slot lost to a
cancelled waiter."""

from __future__ import annotations

import asyncio
import threading

from thaw.runtime.slots import Slots


async def test_no_more_than_opened() -> None:
    slots = Slots(asyncio.get_running_loop())
    assert not slots.try_acquire()  # none until Ready
    slots.open(2)
    assert slots.try_acquire() and slots.try_acquire()
    assert not slots.try_acquire()
    slots.release()
    assert slots.try_acquire()


async def test_waiters_in_order_and_ahead_of_threads() -> None:
    slots = Slots(asyncio.get_running_loop())
    slots.open(1)
    assert slots.try_acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        await slots.acquire()
        order.append(n)

    waiters = [asyncio.create_task(wait(n)) for n in range(3)]
    await asyncio.sleep(0)
    # A release from another thread goes to the first waiter, not to a thread
    # that happens to try at that moment.
    threading.Thread(target=slots.release).start()
    await asyncio.sleep(0.05)
    assert order == [0] and not slots.try_acquire()
    slots.release()
    slots.release()
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]


async def test_a_cancelled_waiter_loses_no_slot() -> None:
    slots = Slots(asyncio.get_running_loop())
    slots.open(1)
    assert slots.try_acquire()

    waiting = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    slots.release()
    assert slots.try_acquire()  # the one slot is back, not owed to the cancelled waiter
    slots.release()

    # Granted and cancelled before it resumed: the slot is passed on.
    assert slots.try_acquire()
    granted = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # the grant is on its way to `granted`
    granted.cancel()
    await asyncio.gather(granted, return_exceptions=True)
    await asyncio.sleep(0)
    assert slots.try_acquire() and not slots.try_acquire()
