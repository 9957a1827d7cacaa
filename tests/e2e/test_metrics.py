"""Prometheus metrics against the real platform: call a function, scrape the
gateway's ``/metrics`` and the agent's (its health reply says where), and see
the counters move: calls issued and finished by status, latency, cold starts,
containers by state; the scheduler's pending inputs."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import thaw as modal
from fixtures.metrics import Samples, metrics_url, scrape, value
from fixtures.platform import Platform
from fixtures.wait import eventually_blocking

APPS = Path(__file__).parent / "apps"
WAIT_S = 60.0

pytestmark = pytest.mark.usefixtures("use_platform")


def test_calls_move_the_counters(platform: Platform) -> None:
    platform.deploy("metered.py")
    gateway = platform.gateway_url + "/metrics"
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(gateway, "wrong-token")
    assert refused.value.code == 401
    before = scrape(gateway, platform.token)

    double = modal.Function.from_name("metered", "double")
    assert [double.remote(i) for i in range(3)] == [0, 2, 4]
    with pytest.raises(ValueError):
        modal.Function.from_name("metered", "fails").remote()

    after = scrape(gateway, platform.token)
    issued = "thaw_calls_issued_total"
    assert (
        value(after, issued, app="metered", function="double")
        - value(before, issued, app="metered", function="double")
        == 3
    )

    agent = asyncio.run(metrics_url(platform.base_env["THAW_NATS_URL"], "agent"))
    last: list[Samples] = [{}]

    def counted() -> bool:
        last[0] = samples = scrape(agent)
        done = value(
            samples, "thaw_calls_total", app="metered", function="double", status="success"
        )
        failed = value(
            samples, "thaw_calls_total", app="metered", function="fails", status="failure"
        )
        return done >= 3 and failed >= 1

    eventually_blocking(
        counted,
        WAIT_S,
        "the agent to count the calls",
        context=lambda: json.dumps({str(k): v for k, v in last[0].items()})[:4000],
    )
    samples = last[0]
    assert value(samples, "thaw_call_duration_seconds_count", app="metered", function="double") >= 3
    assert value(samples, "thaw_container_starts_total", kind="cold", outcome="ok") >= 2
    assert value(samples, "thaw_container_start_seconds_count", kind="cold") >= 2
    assert value(samples, "thaw_containers", state="ready") >= 1

    scheduler = scrape(asyncio.run(metrics_url(platform.base_env["THAW_NATS_URL"], "scheduler")))
    assert (
        "thaw_pending_inputs",
        frozenset({("app", "metered"), ("function", "double")}),
    ) in scheduler
    # The builder serves its metrics too (builds count only once one ran).
    scrape(asyncio.run(metrics_url(platform.base_env["THAW_NATS_URL"], "builder")))
