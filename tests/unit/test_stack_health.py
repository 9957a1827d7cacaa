"""`thaw status`'s probe of the services while NATS is down: a state it
reports at once, not a traceback on stderr or a wait for NATS to return."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fixtures.nats import role_creds
from fixtures.ports import free_port
from thaw.stack import health
from thaw_core import permissions


async def test_services_probe_reports_nats_down_quietly_and_quickly(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"  # nothing listens there

    got = await asyncio.wait_for(
        health.check_services(url, ["gateway", "scheduler"], Path(role_creds(permissions.ADMIN))),
        2 * health.PROBE_TIMEOUT_S,
    )

    assert set(got) == {"gateway", "scheduler"}
    assert all(
        h.status.startswith("nats unreachable (ConnectionRefusedError") for h in got.values()
    )
    assert not [r for r in caplog.records if r.name.startswith("nats")]
    assert capsys.readouterr() == ("", "")
