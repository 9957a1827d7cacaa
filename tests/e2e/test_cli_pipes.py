"""The guide's clean-up pipeline against the real platform:
``thaw app list | grep ephemeral | awk '{print $1}' | xargs -I {} thaw app stop {}``
stops the ephemeral app a `thaw run` keeps deployed, and nothing else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from fixtures.platform import Platform

APPS = Path(__file__).parent / "apps"
THAW = f"{sys.executable} -m thaw.cli"
EPHEMERAL = "probe-long-running-ephemeral-app-whose-name-a-table-cuts"
WAIT_S = 120.0


def _env(platform: Platform, **extra: str) -> dict[str, str]:
    return {**os.environ, "THAW_GATEWAY_URL": platform.gateway_url,
            "THAW_TOKEN": platform.token, **extra}  # fmt: skip


def _apps(platform: Platform) -> dict[str, Any]:
    req = urllib.request.Request(
        platform.gateway_url + "/v1/apps", headers={"Authorization": f"Bearer {platform.token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return {a["name"]: a for a in json.loads(r.read())}


def _until(condition: Any, what: str, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"thaw run ended before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"not {what} within {WAIT_S}s"
        time.sleep(0.2)


def test_the_guides_pipeline_stops_ephemeral_apps(platform: Platform, tmp_path: Path) -> None:
    kept = subprocess.run(
        [sys.executable, "-m", "thaw.cli", "deploy", str(APPS / "pipe_ephemeral.py"),
         "--name", "kept-app-that-the-pipeline-must-not-stop"],
        env=_env(platform), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert kept.returncode == 0, kept.stdout + kept.stderr
    release = tmp_path / "release"
    run = subprocess.Popen(
        [sys.executable, "-m", "thaw.cli", "run", "-q", f"{APPS / 'pipe_ephemeral.py'}::main"],
        env=_env(platform, PIPE_RELEASE_FILE=str(release)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        _until(
            lambda: _apps(platform).get(EPHEMERAL, {}).get("state") == "deployed",
            "deployed", run,
        )  # fmt: skip
        listed = subprocess.run(
            f"{THAW} app list", shell=True, env=_env(platform), capture_output=True, text=True,
            timeout=60, check=True,
        ).stdout  # fmt: skip
        (row,) = [line for line in listed.splitlines() if "ephemeral" in line]
        assert EPHEMERAL in row.split() and row.split()[0].startswith("ap-"), listed

        pipeline = subprocess.run(
            f"{THAW} app list | grep ephemeral | awk '{{print $1}}' | xargs -I {{}} {THAW} app stop {{}}",
            shell=True, env=_env(platform), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert pipeline.returncode == 0, pipeline.stdout + pipeline.stderr
        apps = _apps(platform)
        assert apps[EPHEMERAL]["state"] == "stopped"
        assert apps["kept-app-that-the-pipeline-must-not-stop"]["state"] == "deployed"
    finally:
        release.touch()
        run.wait(timeout=120)
