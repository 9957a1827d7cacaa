"""``@thaw.batched`` deployed: concurrent callers' inputs reach the function
in batches, each caller gets its own result or its batch's exception."""

from __future__ import annotations

import pytest
import thaw as modal
from fixtures.platform import Platform

pytestmark = pytest.mark.usefixtures("use_platform")

CALL_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def double(platform: Platform) -> modal.Function:
    platform.deploy("batched_app.py")
    return modal.Function.from_name("batched-app", "double")


def test_concurrent_calls_arrive_in_batches(double: modal.Function) -> None:
    calls = [double.spawn(i) for i in range(20)]
    results = [call.get(timeout=CALL_TIMEOUT_S) for call in calls]
    assert [value for value, _ in results] == [i * 2 for i in range(20)]
    sizes = [size for _, size in results]
    assert max(sizes) <= 8
    assert max(sizes) > 1, sizes


def test_a_batch_exception_reaches_each_caller_of_it(double: modal.Function) -> None:
    calls = [double.spawn(x) for x in ["boom", 1, 2, 3]]
    outcomes: list[object] = []
    for call in calls:
        try:
            outcomes.append(call.get(timeout=CALL_TIMEOUT_S))
        except ValueError as e:
            outcomes.append(e)
    failed = [o for o in outcomes if isinstance(o, ValueError)]
    assert outcomes[0] in failed
    assert {str(e) for e in failed} == {f"batch of {len(failed)} failed"}


def test_a_batched_method_serves_concurrent_callers(platform: Platform, double: object) -> None:
    scaler = modal.Cls.from_name("batched-app", "Scaler")()
    calls = [scaler.triple.spawn(i) for i in range(12)]
    results = [call.get(timeout=CALL_TIMEOUT_S) for call in calls]
    assert [value for value, _ in results] == [i * 3 for i in range(12)]
    assert max(size for _, size in results) <= 8
