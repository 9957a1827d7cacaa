"""`thaw container exec`: a command in a running function container (and in
a sandbox), with stdin, stdout, stderr and the command's exit code."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import thaw as modal
from fixtures.platform import Platform
from fixtures.wait import eventually


def _exec(platform: Platform, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "thaw.cli", "container", "exec", *args],
        input=stdin, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "THAW_GATEWAY_URL": platform.gateway_url, "THAW_TOKEN": platform.token},
    )  # fmt: skip


async def test_exec_in_a_function_container_returns_its_exit_code(use_platform: Platform) -> None:
    use_platform.deploy("exec_target.py")

    def ready_container() -> str | None:
        out = use_platform.cli("container", "list", "--app", "exec-target", "--json")
        assert out.returncode == 0, out.stderr
        ready = [c["container_id"] for c in json.loads(out.stdout) if c["state"] == "ready"]
        return ready[0] if ready else None

    cid = await eventually(lambda: asyncio.to_thread(ready_container), timeout_s=120,
                           what="a ready container of exec-target")
    done = await asyncio.to_thread(
        _exec, use_platform, cid, "--", "sh", "-c",
        "echo in $THAW_CONTAINER_ID; cat; echo oops >&2; exit 7", stdin="from stdin\n",
    )  # fmt: skip
    assert done.returncode == 7, done.stderr
    assert done.stdout == f"in {cid}\nfrom stdin\n"
    assert done.stderr == "oops\n"
    # Its function still serves.
    assert modal.Function.from_name("exec-target", "ping").remote() == "pong"
    missing = await asyncio.to_thread(_exec, use_platform, "ct-nosuchcontainer", "true")
    assert missing.returncode != 0 and "no container" in missing.stderr


async def test_exec_in_a_sandbox_with_a_terminal(use_platform: Platform) -> None:
    app = modal.App.lookup("exec-sandbox", create_if_missing=True)
    sb = modal.Sandbox.create(app=app, timeout=120)
    try:
        done = await asyncio.to_thread(_exec, use_platform, "-t", sb.object_id, "--", "tty")
        assert done.returncode == 0, done.stderr
        # (A terminal echoes what it is sent: here the end of this command's empty input.)
        assert "/dev/pts/" in done.stdout
        plain = await asyncio.to_thread(_exec, use_platform, sb.object_id, "--", "tty")
        assert plain.returncode == 1 and "not a tty" in plain.stdout
    finally:
        sb.terminate()
