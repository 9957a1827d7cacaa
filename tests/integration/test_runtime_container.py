"""The runtime in a real runc container on the default rootfs (Debian
bookworm's python3 3.11.2), mounted the way the agent mounts it: bootstrap.py
at /opt/thaw/bootstrap.py, the runtime's packages read-only at
/opt/thaw/path/N, the bundle at /thaw/bundle, the agent's socket at
/run/thaw/agent.sock, and no override of any in-container path."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fixtures.agent_double import (
    AgentDouble,
    bundle,  # noqa: F401 - a fixture
    make_invoke,
    value_of,
)
from fixtures.host import needs_containers
from thaw.runtime.paths import (
    BOOTSTRAP_IN_CONTAINER,
    BUNDLE_IN_CONTAINER,
    RUNTIME_PATH_IN_CONTAINER,
    bootstrap_file,
    runtime_paths_env,
)
from thaw_agent import oci
from thaw_agent.runtime_dir import own_runtime_dir
from thaw_core import hosttools
from thaw_core.container_protocol import SOCKET_IN_CONTAINER, Hello, InitFailed, Shutdown

pytestmark = needs_containers


def _bind(source: Path | str, destination: str, mode: str) -> dict[str, object]:
    return {
        "destination": destination,
        "type": "bind",
        "source": str(source),
        "options": ["rbind", mode],
    }


class ContainerAgent(AgentDouble):
    """The agent double, with the runtime in a runc container."""

    def __init__(self, tmp: Path, bundle_dir: Path) -> None:
        super().__init__(tmp, bundle_dir)
        self.io = tmp / "io"
        self.io.mkdir()
        self.exit_file = self.io / "exit-hooks.txt"
        self.exit_file_in_runtime = "/io/exit-hooks.txt"
        self.oci = tmp / "oci"
        self.state_root = tmp / "runc-state"
        self._overlay: Path | None = None

    def runc(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(hosttools.runc_path()), "--root", str(self.state_root), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)

    def runtime_pid(self) -> int:
        return 1  # the container's init

    async def spawn(self, env: dict[str, str]) -> asyncio.subprocess.Process:
        self._make_bundle(env)
        # In the foreground: runc's exit status is the container's.
        return await asyncio.create_subprocess_exec(
            str(hosttools.runc_path()), "--root", str(self.state_root),
            "run", "--bundle", str(self.oci), self.container_id,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    def _make_bundle(self, env: dict[str, str]) -> None:
        """The OCI bundle: config.json and the rootfs overlay it names."""
        self.oci.mkdir()
        subprocess.run([str(hosttools.runc_path()), "spec", "--bundle", str(self.oci)], check=True)
        # A private overlay on the shared rootfs: the mount points runc makes
        # (/opt/thaw/..., /thaw/bundle, /run/thaw) land in this container's upper dir.
        for d in ("upper", "work", "rootfs"):
            (self.oci / d).mkdir()
        lower = hosttools.default_rootfs()
        overlay = f"lowerdir={lower},upperdir={self.oci / 'upper'},workdir={self.oci / 'work'}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", overlay, str(self.oci / "rootfs")],
            check=True,
        )
        self._overlay = self.oci / "rootfs"

        # What the agent mounts: thaw's source dirs and its runtime dir.
        paths = oci.runtime_for("", own_runtime_dir(hosttools.runtime_dir_root())).paths
        cfg = json.loads((self.oci / "config.json").read_text())
        cfg["root"] = {"path": str(self._overlay), "readonly": False}
        cfg["mounts"] += [
            _bind(bootstrap_file(), BOOTSTRAP_IN_CONTAINER, "ro"),
            *(_bind(p, RUNTIME_PATH_IN_CONTAINER.format(n=n), "ro") for n, p in enumerate(paths)),
            _bind(self.bundle, BUNDLE_IN_CONTAINER, "ro"),
            _bind(self.socket_path, SOCKET_IN_CONTAINER, "rw"),
            _bind(self.io, "/io", "rw"),
        ]
        process = cfg["process"]
        process["terminal"] = False
        process["args"] = ["/usr/bin/python3", BOOTSTRAP_IN_CONTAINER]
        process["env"] += [f"THAW_RUNTIME_PATHS={runtime_paths_env(len(paths))}"]
        process["env"] += [f"{k}={v}" for k, v in env.items()]
        (self.oci / "config.json").write_text(json.dumps(cfg))

    async def stop(self) -> None:
        self.runc("kill", self.container_id, "KILL")
        await super().stop()
        self._remove()

    def _remove(self) -> None:
        self.runc("delete", "--force", self.container_id)
        if self._overlay is not None:
            subprocess.run(["umount", "-l", str(self._overlay)], check=False, capture_output=True)


@pytest.fixture
async def agent(bundle: Path) -> AsyncIterator[ContainerAgent]:
    # Short and private: runc's state and the overlay live here.
    tmp = Path(f"/tmp/thaw-rt-{os.urandom(4).hex()}")
    tmp.mkdir()
    double = ContainerAgent(tmp, bundle)
    try:
        yield double
    finally:
        await double.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def test_calls_in_a_container(agent: ContainerAgent) -> None:
    await agent.ready(qualname="where")
    where = value_of(await agent.call(make_invoke("where")))
    # The image's python3, the runtime's packages from the agent's mounts,
    # the user's module from the bundle.
    assert where["python"] == [3, 11, 2]
    assert where["thaw"].startswith("/opt/thaw/path/")
    assert where["msgspec"].startswith("/opt/thaw/path/")
    assert where["module"] == "/thaw/bundle/fns.py"
    assert where["pid"] == 1
    json_result = await agent.call(make_invoke("where", codec="json"))
    assert value_of(json_result)["python"] == [3, 11, 2]


async def test_user_output_and_failures_in_a_container(agent: ContainerAgent) -> None:
    await agent.ready(qualname="shout")
    assert value_of(await agent.call(make_invoke("shout", "hey"))) == "HEY"
    deadline = asyncio.get_running_loop().time() + 2
    while "shouting hey" not in agent.stdout:
        assert asyncio.get_running_loop().time() < deadline, agent.stdout
        await asyncio.sleep(0.02)
    result = await agent.call(make_invoke("shout", 3))
    assert result.status == "failure" and result.error.startswith("AttributeError:")
    assert 'File "/thaw/bundle/fns.py"' in result.traceback and "/opt/thaw" not in result.traceback


async def test_sigterm_to_the_container_runs_exit_hooks(agent: ContainerAgent) -> None:
    await agent.ready(qualname="Greeter", kind="class", methods=["greet"])
    assert value_of(await agent.call(make_invoke("Greeter", method="greet"))) == "hello world!"
    # pid 1 ignores signals it has no handler for: the runtime installs one.
    agent.runc("kill", agent.container_id, "TERM")
    assert await agent.wait_exit() == 0
    assert agent.exit_file.read_text() == "bye world\n"


async def test_shutdown_frame_in_a_container(agent: ContainerAgent) -> None:
    await agent.ready(qualname="add")
    agent.send(Shutdown(grace_s=1))
    assert await agent.wait_exit() == 0


async def test_import_failure_in_a_container(agent: ContainerAgent) -> None:
    await agent.start(qualname="anything", module="broken")
    await agent.expect(Hello)
    failed = await agent.expect(InitFailed)
    assert failed.error == "RuntimeError: no model here"
    assert 'File "/thaw/bundle/broken.py"' in failed.traceback
    assert await agent.wait_exit() == 1


async def test_container_exits_when_the_agent_goes_away(agent: ContainerAgent) -> None:
    await agent.ready(qualname="sleeper")
    agent.submit(make_invoke("sleeper", 30))
    await asyncio.sleep(0.2)
    await agent.close_connection()
    assert await agent.wait_exit(5) != 0
