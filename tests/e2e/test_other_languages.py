"""The examples for other languages, run as a user runs them against a real
stack: examples/node (the `nats` npm package over NATS, `fetch` over HTTP) and
examples/curl (call with wait, spawn then result, batch streamed as NDJSON)."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from fixtures.nats import accepted, in_thread
from fixtures.platform import Platform
from thaw_core.config import NATS_CREDS_ENV

EXAMPLES = Path(__file__).parents[2] / "examples"
APP = Path(__file__).parent / "apps" / "other_languages.py"

pytestmark = pytest.mark.usefixtures("use_platform")


@pytest.fixture(scope="module")
def deployed(platform: Platform) -> None:
    out = platform.cli("deploy", str(APP))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/node's package.json installed into a temporary directory."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("Node.js and npm are part of the test machine (make setup)")
    prefix = tmp_path_factory.mktemp("node")
    shutil.copy(EXAMPLES / "node" / "package.json", prefix / "package.json")
    for script in (EXAMPLES / "node").glob("*.mjs"):
        shutil.copy(script, prefix / script.name)
    out = subprocess.run(
        ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund"],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return prefix


@pytest.fixture(scope="module")
def nats_creds(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An invoke client's credential for the app, as `thaw nats-client create` issues it."""
    path = tmp_path_factory.mktemp("creds") / "node.nats.json"
    name = f"node-{uuid.uuid4().hex[:8]}"
    out = platform.cli("nats-client", "create", name, "--app", "other-languages", "-o", str(path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert path.stat().st_mode & 0o077 == 0, "the credential is private"
    assert "nats-server reloaded" in out.stdout, out.stdout
    in_thread(lambda: accepted(platform.base_env["THAW_NATS_URL"], path))
    return path


def run(
    platform: Platform, argv: list[str], cwd: Path, nats_creds: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **platform.base_env,
        "THAW_GATEWAY_URL": platform.gateway_url,
        "THAW_TOKEN": platform.token,
    }
    # The scripts log in as the invoke client, never as the test's admin.
    env.pop(NATS_CREDS_ENV, None)
    if nats_creds is not None:
        env[NATS_CREDS_ENV] = str(nats_creds)
    return subprocess.run(
        argv, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.parametrize("script", ["invoke_nats.mjs", "invoke_http.mjs"])
def test_node_invokes_and_reads_the_result(
    platform: Platform, deployed: None, node_modules: Path, nats_creds: Path, script: str
) -> None:
    argv = ["node", script, "other-languages", "square", "7"]
    out = run(platform, argv, node_modules, nats_creds)
    assert out.returncode == 0, out.stdout + out.stderr + platform.logs()
    assert json.loads(out.stdout) == 49

    refuse = ["node", script, "other-languages", "refuse", '"no thanks"']
    failed = run(platform, refuse, node_modules, nats_creds)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "ValueError: no thanks" in failed.stderr


def test_curl_call_waits_for_the_result(platform: Platform, deployed: None) -> None:
    out = run(platform, ["./call.sh", "other-languages", "square", "6"], EXAMPLES / "curl")
    assert out.returncode == 0, out.stdout + out.stderr
    answer = json.loads(out.stdout)
    assert (answer["status"], answer["value"]) == ("success", 36)


def test_curl_spawn_then_result(platform: Platform, deployed: None) -> None:
    out = run(platform, ["./spawn.sh", "other-languages", "square", "5"], EXAMPLES / "curl")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.startswith("spawned fc-")
    answer = json.loads(out.stdout)
    assert (answer["status"], answer["value"]) == ("success", 25)
    assert out.stderr.split()[1] == answer["call_id"]


def test_curl_batch_streams_every_result(platform: Platform, deployed: None) -> None:
    out = run(
        platform, ["./batch.sh", "other-languages", "square", "1", "2", "3"], EXAMPLES / "curl"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert sorted((r["index"], r["value"]) for r in lines) == [(0, 1), (1, 4), (2, 9)]
