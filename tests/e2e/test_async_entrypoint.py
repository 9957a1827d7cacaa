"""`thaw run` awaits an ``async def`` local entrypoint to its end."""

from __future__ import annotations

from pathlib import Path

from fixtures.platform import Platform

APPS = Path(__file__).parent / "apps"


def test_async_entrypoint_awaiting_remote_aio_prints_its_result(platform: Platform) -> None:
    out = platform.cli("run", f"{APPS / 'async_entry.py'}::main", "--x", "4")
    assert out.returncode == 0, out.stdout + out.stderr + platform.logs()
    assert "async result: 8" in out.stdout
    assert "never awaited" not in out.stderr
