"""The blocking iterator over the background loop: every item, in order, and
never more than its window ahead of the consumer, with consumed items handed
back to the window in batches (``thaw._sync.CREDIT_BATCH``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from thaw._sync import CREDIT_BATCH, ITER_WINDOW, background_loop


def test_iterate_brings_everything_within_its_window() -> None:
    total = 3 * ITER_WINDOW + CREDIT_BATCH // 2 + 1
    produced = 0

    async def items() -> AsyncIterator[int]:
        nonlocal produced
        for i in range(total):
            produced += 1
            yield i

    got = []
    for item in background_loop().iterate(items()):
        # ``item`` is consumed too; one more may be made while the pump
        # waits for a free credit.
        assert produced - (len(got) + 1) <= ITER_WINDOW + 1
        got.append(item)
    assert got == list(range(total))


def test_aiterate_brings_everything() -> None:
    import asyncio

    total = 2 * ITER_WINDOW + 3

    async def items() -> AsyncIterator[int]:
        for i in range(total):
            yield i

    async def consume() -> list[int]:
        return [i async for i in background_loop().aiterate(items())]

    assert asyncio.run(consume()) == list(range(total))
