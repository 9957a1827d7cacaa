"""The embedded stack end to end: `thaw up --detach --with-agent`, `thaw status`,
crash recovery of NATS and Postgres under the supervisor, the rejection path
of a real service, `thaw down`, and a second `thaw up` on the same data."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import nats
import nats.errors
import pytest
from fixtures.nats import accepted, free_port
from fixtures.ports import free_ports
from fixtures.private_files import exposed, others_may_enter
from fixtures.wait import eventually
from thaw.stack import SERVICES, stack_processes
from thaw_core import permissions
from thaw_core.config import stack_nats_auth_dir
from thaw_core.contract import STREAMS
from thaw_core.nats_auth import NatsAuth, connect_options
from thaw_core.schema import ErrorEvent, decoder

pytestmark = pytest.mark.slow

_error = decoder(ErrorEvent)


@dataclass
class Env:
    state_dir: Path
    env: dict[str, str]
    node_id: str
    nats_url: str
    pg_port: int

    @property
    def dsn(self) -> str:
        # The stack made the password (0600) on its first start.
        password = (self.state_dir / "postgres-password").read_text().strip()
        return f"postgresql://thaw:{password}@127.0.0.1:{self.pg_port}/thaw"


@pytest.fixture
def stack_env() -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="thaw-e2e-"))
    # Postgres runs as an unprivileged user when we are root: it must be able
    # to reach the state dir.
    base.chmod(0o755)
    state = base / "state"
    nats_port, pg_port = free_port(), free_port()
    node_id = f"e2e-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("THAW_")}
    env.update(
        {
            "THAW_STATE_DIR": str(state),
            "THAW_NATS_PORT": str(nats_port),
            "THAW_POSTGRES_PORT": str(pg_port),
            "THAW_GATEWAY_PORT": str(free_port()),
            "THAW_NODE_ID": node_id,
        }
    )
    e = Env(
        state,
        env,
        node_id,
        f"nats://127.0.0.1:{nats_port}",
        pg_port,
    )
    try:
        yield e
    finally:
        # Whatever happened, leave nothing running.
        subprocess.run(
            [sys.executable, "-m", "thaw.cli", "down", "--timeout", "30"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        for p in stack_processes(state):
            p.kill()
        if os.environ.get("THAW_KEEP_TEST_STATE") != "1":
            shutil.rmtree(base, ignore_errors=True)


async def cli(env: Env, *args: str, timeout_s: float) -> tuple[int, str, str]:
    """``thaw ARGS`` on this stack: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "thaw.cli",
        *args,
        env=env.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def thaw(env: Env, *args: str, timeout_s: float = 90) -> tuple[int, str]:
    """``thaw ARGS``: (exit code, what it printed on stdout and stderr)."""
    rc, out, err = await cli(env, *args, timeout_s=timeout_s)
    return rc, out + err


async def status(env: Env) -> tuple[int, dict[str, Any]]:
    """`thaw status --json`, whatever the stack's state: its stdout is its
    document and nothing else, and it prints no traceback."""
    rc, out, err = await cli(env, "status", "--json", timeout_s=30)
    try:
        doc = json.loads(out)
    except json.JSONDecodeError as e:
        raise AssertionError(f"stdout is not one JSON document ({e}):\n{out}\n{err}") from None
    assert "Traceback" not in err, err
    return rc, doc


def parts(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in st["parts"]}


async def healthy_with(env: Env, pred: Callable[[dict[str, dict[str, Any]]], bool]) -> Any:
    rc, st = await status(env)
    return st if rc == 0 and st["healthy"] and pred(parts(st)) else None


def stack_log(env: Env) -> str:
    try:
        return (env.state_dir / "logs" / "stack.log").read_text()[-4000:]
    except OSError:
        return "(no stack.log)"


async def node_row(env: Env) -> asyncpg.Record | None:
    con = await asyncpg.connect(env.dsn, timeout=5)
    try:
        return await con.fetchrow(
            "SELECT id, inventory, last_seen FROM nodes WHERE id = $1", env.node_id
        )
    finally:
        await con.close()


async def test_stack_lifecycle(stack_env: Env) -> None:
    env = stack_env

    # ---- up, detached, with an agent
    rc, out = await thaw(env, "up", "--detach", "--with-agent")
    assert rc == 0, out
    assert f"http://127.0.0.1:{env.env['THAW_GATEWAY_PORT']}" in out
    token_file = env.state_dir / "admin-token"
    token = token_file.read_text().strip()
    assert token and token in out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    sup_pid = int((env.state_dir / "stack.pid").read_text())

    # A second stack on the same state dir is refused.
    rc, out = await thaw(env, "up", "--detach")
    assert rc != 0 and "already running" in out, out

    # ---- status: every part healthy
    rc, st = await status(env)
    assert rc == 0 and st["healthy"], st
    p = parts(st)
    assert set(p) == {"nats", "postgres", "blob", *SERVICES, "agent"}
    assert all(x["health"] == "ok" for x in p.values()), p
    service_pids = {n: p[n]["pid"] for n in (*SERVICES, "agent")}
    assert all(service_pids.values())
    rc, human = await thaw(env, "status")
    assert rc == 0 and "scheduler" in human

    # ---- Postgres asks for the password, which no output or state file holds
    pw_file = env.state_dir / "postgres-password"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    password = pw_file.read_text().strip()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(env.dsn.replace(password, "guess"), timeout=5)
    seen = [human, json.dumps(st), (env.state_dir / "stack.json").read_text()]
    seen += [f.read_text(errors="replace") for f in (env.state_dir / "logs").glob("*.log")]
    assert not [text for text in seen if password in text]

    # ---- the state dir is closed to other users; no credential in it is readable
    assert not others_may_enter(env.state_dir), oct(env.state_dir.stat().st_mode)
    assert not others_may_enter(env.state_dir / "logs")
    assert exposed(env.state_dir, [token, password]) == []

    # ---- the agent's heartbeat reaches the scheduler, which stores it
    row = await eventually(lambda: node_row(env), timeout_s=15, what="nodes row")
    inventory = json.loads(row["inventory"])
    assert inventory["node_id"] == env.node_id and inventory["cores"] >= 1

    # ---- each node its own NATS user: the embedded one's, and a remote node's
    # issued by `thaw node credentials create`, which gets in at once
    node_file = env.state_dir.parent / "node-x.nats.json"
    rc, out = await thaw(env, "node", "credentials", "create", "node-x", "-o", str(node_file))
    assert rc == 0, out
    assert stat.S_IMODE(node_file.stat().st_mode) == 0o600
    await accepted(env.nats_url, node_file)
    rc, out = await thaw(env, "node", "credentials", "list")
    assert rc == 0 and "node-x" in out and env.node_id in out, out
    rc, out = await thaw(env, "node", "credentials", "revoke", "node-x")
    assert rc == 0, out

    # ---- NATS down: a state `thaw status` reports. The supervisor is paused,
    # so that NATS stays down while we look.
    os.kill(sup_pid, signal.SIGSTOP)
    try:
        os.kill(p["nats"]["pid"], signal.SIGKILL)
        rc, st = await status(env)
    finally:
        os.kill(sup_pid, signal.SIGCONT)
    down = parts(st)
    assert rc != 0 and not st["healthy"], st
    assert down["nats"]["health"] != "ok", down
    assert all("nats unreachable" in down[n]["health"] for n in service_pids), down

    # ---- NATS crashed: the supervisor restarts it; services reconnect in place
    st = await eventually(
        lambda: healthy_with(
            env, lambda q: q["nats"]["pid"] != p["nats"]["pid"] and q["nats"]["restarts"] >= 1
        ),
        timeout_s=30,
        what="healthy again after kill -9 nats-server\n" + stack_log(env),
        every_s=0.3,
    )
    assert {n: parts(st)[n]["pid"] for n in service_pids} == service_pids

    # ---- Postgres crashes: the same
    p = parts(st)
    os.kill(p["postgres"]["pid"], signal.SIGKILL)
    killed_at = time.time()
    st = await eventually(
        lambda: healthy_with(env, lambda q: q["postgres"]["pid"] != p["postgres"]["pid"]),
        timeout_s=30,
        what="healthy again after kill -9 postgres\n" + stack_log(env),
        every_s=0.3,
    )
    assert {n: parts(st)[n]["pid"] for n in service_pids} == service_pids

    # Heartbeats flow into the database again.
    async def fresh_row() -> bool:
        r = await node_row(env)
        return r is not None and r["last_seen"].timestamp() > killed_at

    await eventually(fresh_row, timeout_s=15, what="a heartbeat stored after the restart")

    # ---- NATS takes no connection without a credential of the stack's
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(env.nats_url, allow_reconnect=False, max_reconnect_attempts=0)
    admin = NatsAuth(stack_nats_auth_dir(env.state_dir)).creds(permissions.ADMIN)
    assert admin.stat().st_mode & 0o077 == 0, "the admin credential is private"

    # ---- a malformed heartbeat: an ErrorEvent, and the scheduler carries on
    nc = await nats.connect(env.nats_url, **connect_options(admin))
    try:
        sub = await nc.subscribe("thaw.event.error.scheduler")
        await nc.jetstream().publish("thaw.event.node.e2e-bad", b'{"type": "node_heartbeat",')
        msg = await sub.next_msg(timeout=10)
        ev = _error.decode(msg.data)
        assert ev.service == "scheduler" and ev.code == "malformed"
        assert ev.subject == "thaw.event.node.e2e-bad"
    finally:
        await nc.close()
    rc, st = await status(env)
    assert rc == 0 and parts(st)["scheduler"]["pid"] == service_pids["scheduler"], st

    # ---- down: everything stops
    rc, out = await thaw(env, "down")
    assert rc == 0, out
    assert not (env.state_dir / "stack.pid").exists() or not _alive(sup_pid)
    await eventually(
        lambda: _none_left(env.state_dir), timeout_s=10, what="no process left after down"
    )
    rc, _ = await status(env)
    assert rc != 0

    # ---- a second up keeps the data: NATS store and the nodes row
    rc, out = await thaw(env, "up", "--detach")
    assert rc == 0, out
    assert token_file.read_text().strip() == token
    row2 = await node_row(env)
    assert row2 is not None and row2["id"] == env.node_id
    rc, out = await thaw(env, "down")
    assert rc == 0, out
    await eventually(
        lambda: _none_left(env.state_dir), timeout_s=10, what="no process left after down"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _none_left(state_dir: Path) -> bool:
    return not await asyncio.to_thread(stack_processes, state_dir)


async def test_stack_with_a_nats_cluster(stack_env: Env) -> None:
    """`thaw up --nats-cluster 3`: three servers, every stream kept on all of
    them, routes that take no unauthenticated peer, and a member killed with
    SIGKILL is restarted while the others serve."""
    env = stack_env
    client_port = free_ports(6)  # the clients' three, then the routes'
    route_port = client_port + 3
    env.env |= {"THAW_NATS_PORT": str(client_port), "THAW_NATS_CLUSTER_PORT": str(route_port)}
    rc, out = await thaw(env, "up", "--detach", "--nats-cluster", "3", timeout_s=180)
    assert rc == 0, out + stack_log(env)
    rc, st = await status(env)
    p = parts(st)
    assert rc == 0 and st["healthy"], st
    assert {"nats-1", "nats-2", "nats-3"} <= set(p) and "nats" not in p
    assert [p[f"nats-{i}"]["port"] for i in (1, 2, 3)] == [str(client_port + i) for i in range(3)]

    admin = NatsAuth(stack_nats_auth_dir(env.state_dir)).creds(permissions.ADMIN)
    urls = [f"nats://127.0.0.1:{client_port + i}" for i in range(3)]
    nc = await nats.connect(urls, **connect_options(admin))
    try:
        for spec in STREAMS:
            info = await nc.jetstream().stream_info(spec.name)
            assert info.config.num_replicas == 3, spec.name
    finally:
        await nc.close()

    # A route without the cluster's password is turned away.
    reader, writer = await asyncio.open_connection("127.0.0.1", route_port)
    try:
        await reader.readline()  # the route's INFO
        writer.write(b'CONNECT {"verbose":false,"name":"intruder","cluster":"thaw"}\r\nPING\r\n')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()
    assert b"Authorization Violation" in answer, answer

    # An invoke client issued now gets in on every member once they reloaded.
    client = env.state_dir.parent / "client.nats.json"
    rc, out = await thaw(env, "nats-client", "create", "c1", "--app", "a1", "-o", str(client))
    assert rc == 0, out
    for url in urls:
        await accepted(url, client)

    os.kill(p["nats-2"]["pid"], signal.SIGKILL)
    await eventually(
        lambda: healthy_with(
            env, lambda q: q["nats-2"]["pid"] != p["nats-2"]["pid"] and q["nats-2"]["restarts"] >= 1
        ),
        timeout_s=60,
        what="healthy again after kill -9 of one cluster member\n" + stack_log(env),
        every_s=0.5,
    )
    rc, out = await thaw(env, "down", "--timeout", "30")
    assert rc == 0, out
