"""The runtime's side of a memory snapshot, as a real process against a double
of the agent (tests/integration/test_runtime.py's), without runc or CRIU:
with THAW_SNAPSHOT=1 it runs the snap=True hooks, says SnapshotReady,
closes its connection, waits for the socket to come back, takes the
identity and env of the agent's Configure, runs the snap=False hooks and serves.
(The checkpoint itself is tested with real CRIU in test_agent_snapshot.py.)
"""

from __future__ import annotations

import asyncio
import random
import sys
import textwrap
import types
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fixtures.agent_double import AgentDouble, make_invoke, value_of
from thaw.runtime.reseed import reseed_generators
from thaw_core.container_protocol import Hello, Ready, SnapshotReady

SOURCE = """
import os
import random

import thaw

app = thaw.App("rt-snap")


@app.cls(enable_memory_snapshot=True)
class Snap:
    @thaw.enter(snap=True)
    def load(self):
        self.loaded_pid = os.getpid()
        self.restores = 0
        self.secret_at_snap = os.environ.get("SECRET", "")

    @thaw.enter(snap=False)
    def setup(self):
        self.restores += 1
        self.secret_after = os.environ.get("SECRET", "")

    @thaw.method()
    def state(self):
        return {
            "pid": self.loaded_pid,
            "restores": self.restores,
            "secret_at_snap": self.secret_at_snap,
            "secret_after": self.secret_after,
            "container": os.environ["THAW_CONTAINER_ID"],
        }
"""


class SnapshottingAgent(AgentDouble):
    """Starts the runtime told to pause for a snapshot, and removes its socket
    once the runtime connected, as the real agent does."""

    async def spawn(self, env: dict[str, str]) -> asyncio.subprocess.Process:
        return await super().spawn({**env, "SECRET": "old", "THAW_SNAPSHOT": "1"})

    def forget_socket(self) -> None:
        assert self._server is not None
        self._server.close()
        self.socket_path.unlink()

    async def listen_again(self) -> None:
        self._connected.clear()
        self._server = await asyncio.start_unix_server(self._on_connect, path=str(self.socket_path))


@pytest.fixture
def snap_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("snap-bundle")
    (root / "snapapp.py").write_text(textwrap.dedent(SOURCE).lstrip())
    return root


@pytest.fixture
async def agent(tmp_path: Path, snap_bundle: Path) -> AsyncIterator[SnapshottingAgent]:
    double = SnapshottingAgent(tmp_path, snap_bundle)
    yield double
    await double.stop()


async def test_runtime_pauses_for_the_snapshot_and_comes_back_as_another_container(
    agent: SnapshottingAgent,
) -> None:
    await agent.start("Snap", module="snapapp", kind="class", methods=["state"])
    hello = await agent.expect(Hello)
    assert hello.container_id == agent.container_id
    agent.forget_socket()
    await agent.expect(SnapshotReady)
    assert await agent.control.get() is None  # it let go of its connection
    # Paused: no socket, so it waits (a checkpoint would happen here).
    await asyncio.sleep(0.3)
    assert agent.proc is not None and agent.proc.returncode is None

    new_id = "ctr-restored"
    agent.container_id, agent.socket_env, agent.restored = new_id, {"SECRET": "fresh"}, True
    await agent.listen_again()
    assert await agent.expect(Hello) == Hello(container_id=new_id, pid=agent.runtime_pid())
    await agent.expect(Ready)
    state = value_of(await agent.call(make_invoke("Snap", method="state")))
    assert state == {
        "pid": agent.runtime_pid(),
        "restores": 1,
        "secret_at_snap": "old",
        "secret_after": "fresh",
        "container": new_id,
    }
    assert any("restored as ctr-restored" in line for line in agent.stderr)


def test_reseed_reaches_random_numpy_and_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds: dict[str, int] = {}
    fake_numpy = types.SimpleNamespace(
        random=types.SimpleNamespace(seed=lambda s: seeds.__setitem__("numpy", s))
    )
    fake_torch = types.SimpleNamespace(manual_seed=lambda s: seeds.__setitem__("torch", s))
    monkeypatch.setitem(sys.modules, "numpy", fake_numpy)
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    random.seed(42)
    before = random.random()
    random.seed(42)
    assert reseed_generators() == ["random", "numpy", "torch"]
    assert random.random() != before
    assert 0 <= seeds["numpy"] < 2**32 and 0 <= seeds["torch"] < 2**63
    first = dict(seeds)
    reseed_generators()
    assert seeds != first  # fresh entropy each time


def test_reseed_imports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert "torch" not in reseed_generators()
    assert "torch" not in sys.modules
