"""``thaw.current_function_call_id()`` inside a container, and
``Function.update_autoscaler`` on a deployed function."""

from __future__ import annotations

import time
from typing import Any

import pytest
import thaw as modal
from fixtures.platform import Platform

pytestmark = pytest.mark.usefixtures("use_platform")

SCALE_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def extras(platform: Platform) -> None:
    platform.deploy("sdk_extras.py")


@pytest.mark.parametrize("name", ["call_id", "async_call_id"])
def test_a_function_knows_the_id_of_its_call(extras: None, name: str) -> None:
    fn = modal.Function.from_name("sdk-extras", name)
    call = fn.spawn()
    assert call.get(timeout=120) == call.object_id
    assert modal.current_function_call_id() is None  # locally


def test_min_containers_set_after_deploy_starts_a_container(
    platform: Platform, extras: None
) -> None:
    def containers() -> list[dict[str, Any]]:
        body = platform.api("/v1/containers")
        return [
            c for c in body["containers"] if c["app"] == "sdk-extras" and c["function"] == "warm"
        ]

    assert containers() == []
    fn = modal.Function.from_name("sdk-extras", "warm")
    fn.update_autoscaler(min_containers=1, scaledown_window=1)
    deadline = time.monotonic() + SCALE_TIMEOUT_S
    while not containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(containers()) == 1, "min_containers=1 started no container"

    fn.update_autoscaler(min_containers=0)
    deadline = time.monotonic() + SCALE_TIMEOUT_S
    while containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert containers() == [], "still running after min_containers=0 and a 1s scaledown_window"

    with pytest.raises(modal.exception.InvalidError, match="max_containers"):
        fn.update_autoscaler(min_containers=3, max_containers=1)

