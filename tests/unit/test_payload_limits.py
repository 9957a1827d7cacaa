"""What bounds large payloads: the gateway's budget for bodies read whole
(requests past it wait their turn, one larger than all of it is refused
naming the setting), the inline limit that must fit a bus message, and the
sweep that deletes each hour's payloads once its results aged out."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from thaw_core.blob import LocalBlobStore
from thaw_core.config import ConfigError
from thaw_core.contract import PAYLOAD_HOUR_S, RESULTS_STREAM, payload_key
from thaw_gateway.body_budget import BUDGET_NAME, BodyBudget
from thaw_gateway.errors import ApiError
from thaw_gateway.payloads import PayloadSweeper, check_inline_fits


def _request():  # type: ignore[no-untyped-def]
    return make_mocked_request("POST", "/v1/functions/a/f/calls")


async def test_a_body_past_the_budget_waits_for_one_to_finish() -> None:
    budget = BodyBudget(100)
    first, second = _request(), _request()
    await budget.reserve(first, 40, "a body")  # takes 80
    waiting = asyncio.create_task(budget.reserve(second, 40, "a body"))
    await asyncio.sleep(0.05)
    assert not waiting.done() and budget.used == 80
    await budget.release(first)
    await asyncio.wait_for(waiting, 5)
    assert budget.used == 80
    await budget.release(second)
    await budget.release(second)  # once only
    assert budget.used == 0


async def test_a_body_larger_than_the_whole_budget_is_refused_naming_it() -> None:
    budget = BodyBudget(100)
    with pytest.raises(ApiError) as info:
        await budget.reserve(_request(), 51, "a request body")
    assert info.value.status == 413 and BUDGET_NAME in info.value.message
    assert budget.used == 0


def test_the_inline_limit_must_fit_a_bus_message() -> None:
    check_inline_fits(256 << 10, 1 << 20)
    with pytest.raises(ConfigError, match="THAW_PAYLOAD_INLINE_BYTES"):
        check_inline_fits(1 << 20, 1 << 20)


async def test_the_sweep_deletes_only_hours_whose_results_aged_out(tmp_path: Path) -> None:
    blob = LocalBlobStore(tmp_path, fsync=False)
    now = 1_800_000_000.0
    this_hour = int(now // PAYLOAD_HOUR_S)
    retention_hours = int((RESULTS_STREAM.max_age_s or 0) // PAYLOAD_HOUR_S)
    old, kept = this_hour - retention_hours - 2, this_hour - retention_hours + 1
    data = b"payload"
    sha = hashlib.sha256(data).hexdigest()
    for hour in (old, kept, this_hour):
        await blob.put(payload_key(hour, sha), data)
    await blob.put("bundles/other.zip", data)
    assert await PayloadSweeper(blob).sweep(now) == 1
    assert sorted(await blob.list("")) == sorted(
        ["bundles/other.zip", payload_key(kept, sha), payload_key(this_hour, sha)]
    )
