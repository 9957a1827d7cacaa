"""`thaw.Sandbox` on the real stack: the code-interpreter pattern, timeouts,
no network, isolation between sandboxes, files, tags and listing."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlsplit

import pytest
import thaw as modal
from fixtures.platform import Platform
from fixtures.wait import eventually

# A tiny interpreter: each line of stdin is a Python expression, answered
# with its value as one JSON line on stdout; its state lives on between lines.
DRIVER = """
import json, sys
scope = {}
for line in sys.stdin:
    exec(compile("_ = " + line, "<cell>", "exec"), scope)
    print(json.dumps(scope["_"]), flush=True)
"""


@pytest.fixture
def app(use_platform: Platform) -> modal.App:
    return modal.App.lookup("sandbox-e2e", create_if_missing=True)


def test_code_interpreter_keeps_its_state_across_ten_inputs(app: modal.App) -> None:
    sb = modal.Sandbox.create("python3", "-c", DRIVER, app=app, timeout=120)
    try:
        sb.stdin.write("(seen := [])\n")
        sb.stdin.drain()
        assert json.loads(sb.stdout.readline()) == []
        for i in range(10):  # each answer depends on what the earlier inputs left
            sb.stdin.write(f"(seen.append({i} * {i}), sum(seen))[1]\n")
            sb.stdin.drain()
            assert json.loads(sb.stdout.readline()) == sum(k * k for k in range(i + 1))
        # The same through exec: a long-lived python fed ten lines.
        p = sb.exec("python3", "-c", DRIVER)
        for i in range(10):
            p.stdin.write(f"sum(range({i + 1}))\n")
            p.stdin.drain()
            assert json.loads(p.stdout.readline()) == sum(range(i + 1))
        p.stdin.write_eof()
        p.stdin.drain()
        assert p.wait() == 0
        sb.stdin.write_eof()
        sb.stdin.drain()
        sb.wait()
        assert sb.returncode == 0
    finally:
        sb.terminate()


def test_exec_streams_and_exit_codes(app: modal.App) -> None:
    sb = modal.Sandbox.create(app=app, timeout=120)
    try:
        p = sb.exec("sh", "-c", "echo out; echo err >&2; exit 3", workdir="/tmp")
        assert p.stdout.read() == "out\n"
        assert p.stderr.read() == "err\n"
        assert p.wait() == 3 and p.returncode == 3
        assert sb.exec("pwd", workdir="/tmp").stdout.read() == "/tmp\n"
        lines = list(sb.exec("seq", "1", "5").stdout)
        assert lines == ["1\n", "2\n", "3\n", "4\n", "5\n"]
        slow = sb.exec("sleep", "60", timeout=1)
        assert slow.wait() != 0
        assert sb.poll() is None
    finally:
        sb.terminate()
    sb.wait(raise_on_termination=False)
    assert sb.returncode is not None


async def test_a_sandbox_past_its_timeout_is_gone(app: modal.App, use_platform: Platform) -> None:
    sb = modal.Sandbox.create("sleep", "600", app=app, timeout=5)
    with pytest.raises(modal.exception.SandboxTimeoutError, match="timed out after 5s"):
        sb.wait()  # returns once the agent says its process ended
    assert sb.returncode is not None and sb.returncode != 0
    assert sb.poll() is not None
    with pytest.raises(modal.exception.Error, match="ended"):
        sb.exec("true")

    def listed_running() -> bool:
        out = use_platform.cli("container", "list", "--json")
        assert out.returncode == 0, out.stderr
        return any(
            c["container_id"] == sb.object_id and c["state"] in ("starting", "ready")
            for c in json.loads(out.stdout)
        )

    # No longer running in the next heartbeat the scheduler records.
    await eventually(lambda: asyncio.to_thread(lambda: not listed_running()), timeout_s=30,
                     what="the timed-out sandbox gone from `thaw container list`")


def test_blocked_network_cannot_reach_the_gateway(app: modal.App, use_platform: Platform) -> None:
    nats = urlsplit(use_platform.base_env["THAW_NATS_URL"])
    # The gateway and NATS on the host's loopback and the host's other
    # addresses, and a public address: none answers from inside.
    targets = [("127.0.0.1", use_platform.gateway_port), ("127.0.0.1", nats.port or 4222)]
    targets += [(ip, use_platform.gateway_port) for ip in _host_addresses()]
    targets.append(("8.8.8.8", 53))
    probe = (
        "import socket, sys\n"
        f"for host, port in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3).close()\n"
        "        print('reached', host, port)\n"
        "    except OSError as e:\n"
        "        print(host, port, type(e).__name__)\n"
    )
    sb = modal.Sandbox.create(app=app, block_network=True, timeout=120)
    try:
        p = sb.exec("python3", "-c", probe)
        out = p.stdout.read()
        assert p.wait() == 0, p.stderr.read()
        assert "reached" not in out and out.count("\n") == len(targets), out
    finally:
        sb.terminate()
    # The host side of the check: the gateway does answer there.
    socket.create_connection(("127.0.0.1", use_platform.gateway_port), timeout=10).close()


def _host_addresses() -> list[str]:
    import psutil

    return [
        a.address for addrs in psutil.net_if_addrs().values() for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]  # fmt: skip


def test_two_sandboxes_do_not_see_each_others_files(app: modal.App) -> None:
    one = modal.Sandbox.create(app=app, timeout=120)
    two = modal.Sandbox.create(app=app, timeout=120)
    try:
        with one.open("/tmp/secret.txt", "w") as f:
            f.write("only one's\n")
        with one.open("/tmp/secret.txt") as f:
            assert f.read() == "only one's\n"
        with pytest.raises(FileNotFoundError):
            two.open("/tmp/secret.txt")
        ls = two.exec("sh", "-c", "ls /tmp; ps -e -o comm=").stdout.read()
        assert "secret.txt" not in ls
    finally:
        one.terminate()
        two.terminate()


async def test_tags_list_and_from_id(app: modal.App, use_platform: Platform) -> None:
    sb = modal.Sandbox.create(app=app, timeout=120)
    try:
        sb.set_tags({"role": "worker", "run": "e2e"})
        assert sb.get_tags() == {"role": "worker", "run": "e2e"}
        again = modal.Sandbox.from_id(sb.object_id)
        assert again.exec("echo", "hi").stdout.read() == "hi\n"
        def listed() -> list[str]:
            return [s.object_id for s in modal.Sandbox.list(app_id=app.name, tags={"role": "worker"})]

        # Listed from the heartbeats the scheduler records: within one of them.
        await eventually(
            lambda: asyncio.to_thread(listed), timeout_s=30, what="the sandbox listed"
        )
        assert await asyncio.to_thread(listed) == [sb.object_id]
        shown = json.loads(use_platform.cli("container", "list", "--json").stdout)
        assert {"container_id": sb.object_id, "function": "(sandbox)", "app": app.name}.items() <= next(
            c for c in shown if c["container_id"] == sb.object_id
        ).items()
        assert modal.Sandbox.list(app_id=app.name, tags={"role": "other"}) == []
    finally:
        sb.terminate()


def test_options_thaw_does_not_serve_are_refused(app: modal.App) -> None:
    with pytest.raises(modal.exception.InvalidError, match="encrypted_ports"):
        modal.Sandbox.create(app=app, encrypted_ports=[8000])
    with pytest.raises(modal.exception.InvalidError, match="gpu"):
        modal.Sandbox.create(app=app, gpu="A10G")
    with pytest.raises(modal.exception.InvalidError, match="add_local"):
        modal.Sandbox.create(app=app, image=modal.Image.debian_slim().add_local_file(__file__, "/t.py"))


def test_an_unknown_option_is_refused_not_dropped(app: modal.App) -> None:
    with pytest.raises(modal.exception.InvalidError, match="ephemeral_dsk"):
        modal.Sandbox.create(app=app, ephemeral_dsk=64)


def test_writing_past_the_ephemeral_disk_is_enospc(app: modal.App) -> None:
    sb = modal.Sandbox.create(app=app, ephemeral_disk=64, timeout=120)
    try:
        # /tmp is a tmpfs (memory): the writable layer is the rest of the tree.
        p = sb.exec("sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=200 2>&1; echo rc=$?")
        out = p.stdout.read()
        assert p.wait() == 0
        assert "No space left on device" in out and "rc=0" not in out, out
        written = int(sb.exec("sh", "-c", "du -m /fill | cut -f1").stdout.read())
        assert 32 <= written <= 64
        # Refused a write, not ended: it goes on once the file is gone.
        again = sb.exec("sh", "-c", "rm /fill && echo ok > /again && cat /again")
        assert again.stdout.read() == "ok\n"
    finally:
        sb.terminate()


def test_a_sandbox_on_an_image_with_build_steps(app: modal.App) -> None:
    image = modal.Image.debian_slim().run_commands("echo built-for-the-sandbox > /marker")
    sb = modal.Sandbox.create("cat", "/marker", app=app, image=image, timeout=120)
    assert sb.stdout.read() == "built-for-the-sandbox\n"
    sb.wait()
    assert sb.returncode == 0


async def test_thaw_container_stop_ends_a_sandbox(app: modal.App, use_platform: Platform) -> None:
    sb = modal.Sandbox.create(app=app, timeout=300)
    stopped = await asyncio.to_thread(use_platform.cli, "container", "stop", sb.object_id)
    # Stopped through its node's agent, once the heartbeats have shown where it is.
    while stopped.returncode != 0 and "no container" in stopped.stderr:
        await eventually(lambda: asyncio.to_thread(lambda: sb.object_id in use_platform.cli(
            "container", "list").stdout), timeout_s=30, what="the sandbox listed")
        stopped = await asyncio.to_thread(use_platform.cli, "container", "stop", sb.object_id)
    assert stopped.returncode == 0, stopped.stderr
    with pytest.raises(modal.exception.SandboxTerminatedError):
        sb.wait()
    assert sb.returncode is not None


def test_an_idle_sandbox_is_ended(app: modal.App) -> None:
    sb = modal.Sandbox.create(app=app, timeout=300, idle_timeout=2)
    with pytest.raises(modal.exception.SandboxTimeoutError, match="idle"):
        sb.wait()  # nothing asked of it: the agent ends it once idle
    assert sb.returncode is not None


def test_secrets_and_env_reach_the_sandbox(app: modal.App, use_platform: Platform) -> None:
    made = use_platform.cli("secret", "create", "sandbox-e2e-creds", "API_KEY=s3cr3t-in-sandbox")
    assert made.returncode == 0, made.stderr
    sb = modal.Sandbox.create(
        "sh", "-c", 'echo "$API_KEY $GREETING"', app=app, timeout=60,
        secrets=[modal.Secret.from_name("sandbox-e2e-creds")], env={"GREETING": "hi"},
    )  # fmt: skip
    assert sb.stdout.read() == "s3cr3t-in-sandbox hi\n"
    sb.wait()
    assert sb.returncode == 0


async def test_a_warm_idle_container_gives_way_to_a_sandbox(
    app: modal.App, use_platform: Platform
) -> None:
    """A node kept full by an idle warm container (a 600 s scaledown_window)
    still runs a sandbox at once: the idle container is stopped for it."""
    use_platform.deploy("node_filler.py")
    try:
        hold = modal.Function.from_name("node-filler", "hold")
        assert await hold.remote.aio() == "held"

        def filler_containers() -> list[str]:
            listed = use_platform.cli("container", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            return [c["container_id"] for c in json.loads(listed.stdout) if c["app"] == "node-filler"]

        assert await asyncio.to_thread(filler_containers), "the filler's container is not warm"
        sb = await modal.Sandbox.create.aio("echo", "ran", app=app, cpu=1.0, timeout=60)
        assert await sb.stdout.read.aio() == "ran\n"
        await eventually(
            lambda: asyncio.to_thread(lambda: not filler_containers()),
            timeout_s=60, what="the idle filler container stopped",
        )
    finally:
        use_platform.cli("app", "stop", "node-filler")
