"""A schema-driven client agrees with the server: schemathesis, given only
``/v1/openapi.json`` and an admin token, generates requests against a live
gateway (its own platform: every request is real, and some delete things)
and checks every answer: no 5xx, no schema-valid request refused, no
schema-invalid one accepted, answers as the document declares them."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures.platform import Platform

ST = Path(sys.executable).parent / "st"
RUN_TIMEOUT_S = 600.0

# Rules that no JSON Schema can state, so a request the document allows may
# rightly be refused: the one check that assumes otherwise is off for these
# operations (only that check; every other one still runs on them).
ACCEPTANCE = "positive_data_acceptance"
# A 404 that names a file in the volume, not the volume the run created.
AVAILABILITY = "ensure_resource_availability"
CHECKS_OFF: dict[tuple[str, str], str] = {
    # Content-addressed uploads: only a body whose sha256 is the path's is stored.
    ("put_bundle", ACCEPTANCE): "the body must hash to the path's sha256",
    ("put_file", ACCEPTANCE): "the body must hash to the path's sha256",
    ("put_chunk", ACCEPTANCE): "the body must hash to the path's sha256",
    ("put_pack", ACCEPTANCE): "the body must hash to the path's sha256",
    ("put_value", ACCEPTANCE): "the body must hash to the path's sha256",
    ("put_payload", ACCEPTANCE): "the body must hash to the path's sha256",
    # A file's chunks must be stored first and add up to its size.
    ("commit", ACCEPTANCE): "each file's chunks must be stored and make its size",
    # Pieces are read only once stored.
    ("read_chunks", ACCEPTANCE): "each piece must be stored",
    # The bundle must be uploaded first; function names unique, cron
    # expressions valid, web options consistent.
    ("deploy_app", ACCEPTANCE): "the bundle uploaded, unique function names, valid schedules",
    # A sandbox's command must be in its image, its secrets stored, a node have room.
    ("create_sandbox", ACCEPTANCE): "its command must exist, its secrets be stored, a node have room",
    ("remove", AVAILABILITY): "no such file in the volume",
    ("read_file", AVAILABILITY): "no such file in the volume",
    ("list_entries", AVAILABILITY): "no such file or directory in the volume",
}


def _config(path: Path) -> Path:
    lines = [
        "[checks]",
        "enabled = true",  # every check schemathesis has
        # A value over a size limit is refused 413 (payload_too_large), as declared.
        "negative_data_rejection.expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413,"
        + " 415, 422, 428, 429]",
        "",
    ]
    for operation_id, check in CHECKS_OFF:
        lines += [
            "[[operations]]",
            f'include-operation-id = "{operation_id}"',
            f"checks.{check}.enabled = false",
            "",
        ]
    path.write_text("\n".join(lines))
    return path


pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
async def fuzzed_platform(platform_factory: Callable[..., Any]) -> Platform:
    p: Platform = await platform_factory()
    p.ensure_service("volumes")  # the volume routes answer through it
    return p


async def test_schemathesis_finds_nothing(fuzzed_platform: Platform, tmp_path: Path) -> None:
    p = fuzzed_platform
    proc = await asyncio.create_subprocess_exec(
        str(ST), "--config-file", str(_config(tmp_path / "schemathesis.toml")),
        "run", f"{p.gateway_url}/v1/openapi.json",
        "--header", f"Authorization: Bearer {p.token}",
        "--max-examples", "25",
        "--seed", "18",  # the same requests on every run
        "--request-timeout", "30",
        "--wait-for-schema", "30",
        # Streams that last as long as the client stays: nothing to answer in a bound.
        "--exclude-operation-id", "app_logs",
        "--report", "junit", "--report-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,  # its cache directory goes there
        env={
            **os.environ,
            "NO_COLOR": "1",
            "SCHEMATHESIS_HOOKS": "fuzz_hooks",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
        },
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        raise
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-20000:]
