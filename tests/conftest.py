"""Fixtures shared by every test: real servers on free ports with temporary
state, one of each per session (see tests/fixtures/)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest_plugins = [
    "fixtures.nats",
    "fixtures.postgres",
    "fixtures.s3",
    "fixtures.platform",
    "fixtures.registry",
    "fixtures.otlp",
]

_SESSION_PREFIX = "thaw-tests-"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Each session gets a temp root of its own, not pytest's shared
    /tmp/pytest-of-<user>. Agents grant their containers' host uid search on
    every directory above their state dir (a POSIX ACL entry); a second
    pytest session chmods the shared dir back to 0700, which zeroes the ACL
    mask, and every container of the first session then fails to mount.
    Roots of sessions whose process is gone are removed here, as pytest
    removes its old numbered dirs."""
    if config.option.basetemp is not None:
        return
    tmp = Path(tempfile.gettempdir())
    for old in tmp.glob(f"{_SESSION_PREFIX}*"):
        pid = old.name.removeprefix(_SESSION_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    root = tempfile.mkdtemp(prefix=f"{_SESSION_PREFIX}{os.getpid()}-", dir=tmp)
    config.option.basetemp = str(Path(root) / "t")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
