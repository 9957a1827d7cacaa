"""Containers that are not host root: seen from the host, a function
container's processes run as an unprivileged uid under a seccomp filter,
and inside, the calls Docker's default profile denies are refused."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from fixtures.agent import (
    Agent,
    blob,  # noqa: F401 - a fixture
    call,
    make_agent,  # noqa: F401 - a fixture
    put_bundle,
    result_of,
    spec,
    value,
)
from fixtures.host import needs_containers
from thaw_agent import userns
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus

pytestmark = [pytest.mark.slow, needs_containers]

APP_SOURCE = """
import ctypes
import importlib.util
import os
import sys

import msgspec
import thaw

app = thaw.App("isolation-test")
libc = ctypes.CDLL(None, use_errno=True)


def attempt(fn, *args):
    if fn(*args) == 0:
        return "allowed"
    return os.strerror(ctypes.get_errno())


@app.function()
def probe():
    with open("/tmp/mine", "w") as f:
        f.write("x")
    return {
        "uid": os.getuid(),
        "written_owner": os.stat("/tmp/mine").st_uid,
        "rootfs_owner": os.stat("/etc/passwd").st_uid,
        # CLONE_NEWUSER: a namespace where it would be root again.
        "unshare": attempt(libc.unshare, 0x10000000),
        "mount": attempt(libc.mount, b"none", b"/mnt", b"tmpfs", 0, None),
        "etc_writable": os.access("/etc", os.W_OK),
        # What of the host's venv it sees: the runtime's packages, no others.
        "host_only": [n for n in ("flask", "pytest", "requests", "yaml", "boto3")
                      if importlib.util.find_spec(n) is not None],
        "msgspec": msgspec.__file__,
        "site_packages": [p for p in sys.path if "site-packages" in p],
    }
"""


def status_fields(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


async def test_a_containers_processes_are_not_host_root_and_run_under_seccomp(
    make_agent: Callable[..., Awaitable[Agent]], bus: Bus, blob: BlobStore
) -> None:
    agent = await make_agent()
    app = f"iso-{uuid.uuid4().hex[:10]}"
    sha = await put_bundle(blob, APP_SOURCE)
    cid = await agent.start(bus, app, sha, spec("probe"))
    c = await agent.wait_state(cid, "ready")

    status = status_fields(c.pid)
    host_uids = [int(u) for u in status["Uid"].split()]
    assert host_uids == [userns.id_range().base] * 4, status["Uid"]
    assert all(int(g) == userns.id_range().base for g in status["Gid"].split())
    assert status["Seccomp"].strip() == "2"  # filter mode
    assert status["NoNewPrivs"].strip() == "1"

    seen = value(await result_of(bus, await call(bus, app, "probe"), timeout_s=60))
    # Inside, it is root, of its own files and the image's.
    assert seen["uid"] == 0
    assert seen["written_owner"] == 0
    assert seen["rootfs_owner"] == 0
    assert seen["etc_writable"] is True
    assert seen["unshare"] == "Operation not permitted"
    assert seen["mount"] == "Operation not permitted"
    # The host venv's other packages are not there; the runtime's own are,
    # from the agent's directory of them (thaw_agent.runtime_dir).
    assert seen["host_only"] == [], seen
    assert seen["msgspec"].startswith("/opt/thaw/path/"), seen
    assert seen["site_packages"] == [], seen
