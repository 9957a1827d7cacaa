"""``thaw serve`` watches before its first deploy: a file saved while that
deploy runs is deployed again, not missed until the next save."""

from __future__ import annotations

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
