"""``thaw app show``, ``thaw app history`` and ``thaw app logs``'s filters as
a user reads them, piped and as JSON, against a real platform (with the
snapshot service, so that a snapshot's coverage of the fleet shows)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fixtures.platform import Platform
from fixtures.wait import eventually

WAIT_S = 180.0


@pytest.fixture(scope="module")
async def shown_platform(platform_factory: Callable[..., Any]) -> Platform:
    p: Platform = await platform_factory(("shown-a",))
    p.ensure_service("snapshots")
    for _ in range(2):  # two deploys: two versions
        await asyncio.to_thread(p.deploy, "shown.py")
    return p


def _call(p: Platform, function: str, *args: Any) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{p.gateway_url}/v1/functions/shown/{function}/calls?wait=120",
        data=json.dumps({"args": list(args)}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {p.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=150) as r:
        return json.loads(r.read())


def _cli(p: Platform, *args: str) -> str:
    out = p.cli(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _rows(text: str, header: list[str]) -> list[list[str]]:
    first, *rest = text.splitlines()
    assert first.split() == header, first
    return [line.split() for line in rest]


async def test_app_history_lists_every_deploy(shown_platform: Platform) -> None:
    p = shown_platform
    piped = _rows(
        _cli(p, "app", "history", "shown"),
        ["version", "current", "functions", "bundle", "deployed"],
    )
    assert [row[:3] for row in piped] == [["2", "yes", "snapped,tick"], ["1", "-", "snapped,tick"]]
    assert all(len(row[3]) == 64 for row in piped)  # the bundle's sha256, whole
    versions = json.loads(_cli(p, "app", "history", "shown", "--json"))
    assert [(v["version"], v["current"]) for v in versions] == [(2, True), (1, False)]
    app_id = json.loads(_cli(p, "app", "show", "shown", "--json"))["app"]["app_id"]
    by_id = json.loads(_cli(p, "app", "history", app_id, "--json"))
    assert by_id == versions
    missing = p.cli("app", "history", "no-such-app")
    assert missing.returncode != 0 and "no-such-app" in missing.stdout + missing.stderr


async def test_app_show_functions_resources_schedule_and_snapshot_coverage(
    shown_platform: Platform,
) -> None:
    p = shown_platform
    assert _call(p, "snapped", 1)["value"] == 2
    nodes = p.api("/v1/nodes")
    fleet = sorted({n["fingerprint_id"] for n in nodes})
    assert fleet and all(len(c) == 64 for c in fleet), nodes

    def covered() -> dict[str, Any] | None:
        detail = json.loads(_cli(p, "app", "show", "shown", "--json"))
        functions = {f["name"]: f for f in detail["functions"]}
        return functions if functions["snapped"]["snapshot_classes"] else None

    functions = await eventually(covered, WAIT_S, "a ready snapshot of snapped", every_s=1)
    tick, snapped = functions["tick"], functions["snapped"]
    assert (tick["cpu"], tick["memory_mb"], tick["timeout_s"]) == (0.5, 256, 60)
    assert tick["schedule"] == "every 3600s" and not tick["memory_snapshot"]
    assert snapped["memory_snapshot"] and snapped["schedule"] == ""
    assert snapped["fleet_classes"] == fleet and snapped["snapshot_classes"] == fleet

    text = _cli(p, "app", "show", "shown")
    assert "version 2" in text and "recent calls" in text
    # The functions' rows (their kind second; the schedules' rows start with a name too).
    rows = [line.split() for line in text.splitlines()]
    lines = {r[0]: r for r in rows if len(r) > 1 and r[1] in ("function", "class")}
    # function kind methods cpu memory gpu timeout inputs containers scale endpoint snapshots ...
    assert lines["tick"][1:8] == ["function", "-", "0.5", "256MiB", "-", "60s", "1"]
    assert lines["tick"][11] == "off" and " ".join(lines["tick"][13:]) == "every 3600s"
    assert lines["snapped"][11] == f"{len(fleet)}/{len(fleet)}"


async def test_app_logs_filters(shown_platform: Platform) -> None:
    p = shown_platform
    result = _call(p, "snapped", 41)
    assert result["value"] == 42
    container = result["container_id"]

    def logged(*filters: str) -> str:
        return _cli(p, "app", "logs", "shown", *filters)

    await eventually(
        lambda: "snapped says 41" in logged("--function", "snapped"), WAIT_S, "the log line"
    )
    assert "snapped says 41" in logged("--function", "snapped", "--since", "10m")
    assert "snapped says 41" in logged("--container", container[:8])
    assert "snapped says 41" not in logged("--function", "tick")
    assert "snapped says 41" not in logged("--container", "ct-none-like-this")
    later = (datetime.now() + timedelta(minutes=5)).isoformat(timespec="seconds")
    assert "snapped says 41" not in logged("--since", later)
    refused = p.cli("app", "logs", "shown", "--since", "yesterday-ish")
    assert refused.returncode != 0 and "duration" in refused.stdout + refused.stderr
