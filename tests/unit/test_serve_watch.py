"""``thaw serve`` watches before its first deploy: a file saved while that
deploy runs is deployed again, not missed until the next save."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from thaw.cli import serve


def test_a_save_during_the_first_deploy_is_deployed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "app.py"
    source.write_text("VERSION = 1\n")
    deployed: list[str] = []
    again = threading.Event()

    def deploy(app_ref: str) -> str | None:
        deployed.append(source.read_text())
        if len(deployed) == 1:
            source.write_text("VERSION = 2\n")  # saved while the deploy runs
            return None
        again.set()
        raise KeyboardInterrupt  # Ctrl-C: serve stops

    monkeypatch.setattr(serve, "_deploy", deploy)
    result: list[object] = []
    runner = threading.Thread(
        target=lambda: result.append(CliRunner().invoke(serve.serve, [str(source)])), daemon=True
    )
    runner.start()
    # A bound for a loaded machine, not a timing: without the fix it never comes.
    assert again.wait(120), "the save made during the first deploy was never deployed"
    runner.join(60)
    assert deployed == ["VERSION = 1\n", "VERSION = 2\n"]


@pytest.mark.parametrize(
    ("sig", "ignored"),
    [(signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGHUP, False)],
    ids=["SIGINT-inherited-ignored", "SIGTERM", "SIGHUP"],
)
def test_a_stop_signal_ends_serve_as_ctrl_c_does(
    tmp_path: Path, sig: signal.Signals, ignored: bool
) -> None:
    """Each stops ``thaw serve`` cleanly (exit 0, its apps stopped): SIGINT
    even as a shell's background job, which inherits it ignored."""
    source = tmp_path / "app.py"
    source.write_text("raise SystemExit('not deployable')\n")  # nothing to stop after
    # Wide: rich wraps a line at 80 columns where there is no terminal.
    env = {**os.environ, "THAW_GATEWAY_URL": "http://127.0.0.1:9", "THAW_TOKEN": "t",
           "COLUMNS": "500"}  # fmt: skip
    command = shlex.join([sys.executable, "-m", "thaw.cli", "serve", str(source)])
    # As a shell starts a background job: SIGINT ignored, and so inherited.
    trap = "trap '' INT; " if ignored else ""
    proc = subprocess.Popen(
        ["sh", "-c", f"{trap}exec {command}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    printed = ""
    for line in proc.stdout:  # until it watches (its first deploy failed)
        printed += line
        if "Ctrl-C stops" in line:
            break
    assert "Ctrl-C stops" in printed, printed
    proc.send_signal(sig)
    # A bound for a loaded machine, not a timing: without a handler it never ends.
    assert proc.wait(timeout=60) == 0, printed + proc.stdout.read()
