"""Containers' network: a sandbox's (``block_network=False``, the default)
and a function's reach the outside, here a server in a network namespace of
its own standing in for the internet, and not the platform: the host's
loopback (gateway, NATS), the host's own addresses, slirp's alias for the
host, nor another sandbox. A function with a memory snapshot has none."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import thaw as modal
from fixtures.netns import NodeNetwork, netns_available
from fixtures.platform import Platform

pytestmark = pytest.mark.usefixtures("use_platform")

# Answers every connection with one line; prints its port first.
SERVER = """
import socket
s = socket.create_server(("0.0.0.0", 0))
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"hello\\n")
    c.close()
"""

# Each target: what a connection got (its first line), or the error's name.
PROBE = """
import json, socket, sys
got = {}
for host, port in json.loads(sys.argv[1]):
    try:
        with socket.create_connection((host, port), timeout=5) as c:
            got[f"{host}:{port}"] = "reached " + c.makefile().readline().strip()
    except OSError as e:
        got[f"{host}:{port}"] = type(e).__name__
print(json.dumps(got))
"""


# Takes the sandbox's own interface down: what CAP_NET_ADMIN would allow.
IFDOWN = """
import fcntl, socket, struct
s = socket.socket()
fcntl.ioctl(s, 0x8914, struct.pack("16sH22x", b"tap0", 0))  # SIOCSIFFLAGS
"""


@pytest.fixture
def outside() -> Iterator[tuple[NodeNetwork, str, int]]:
    """A server on an address that is not the host's, in a namespace of its
    own: what a sandbox's outbound network is for."""
    if why := netns_available():
        pytest.skip(why)
    net = NodeNetwork()
    server = None
    try:
        node = net.add("outside")
        server = subprocess.Popen(
            [*node.exec_prefix(), sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        port = int(server.stdout.readline())
        yield net, node.address, port
    finally:
        if server is not None:
            server.kill()
            server.wait()
        net.cleanup()


@pytest.fixture
def listener() -> Iterator[int]:
    """A service on all of the host's addresses, as a NATS or Postgres
    deployed to listen beyond loopback would be."""
    with socket.create_server(("0.0.0.0", 0), backlog=16) as s:
        yield s.getsockname()[1]


def _host_addresses() -> list[str]:
    import psutil

    return [
        a.address for addrs in psutil.net_if_addrs().values() for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]  # fmt: skip


def _platform_targets(use_platform: Platform, listener: int) -> list[tuple[str, int]]:
    """The gateway and NATS on the host's loopback, and ``listener`` on
    every host address and slirp's alias for the host."""
    gateway = use_platform.gateway_port
    nats = urlsplit(use_platform.base_env["THAW_NATS_URL"]).port or 4222
    platform = [("127.0.0.1", gateway), ("127.0.0.1", nats), ("10.0.2.2", gateway)]
    return platform + [(ip, listener) for ip in ["10.0.2.2", *_host_addresses()]]


def _probe(sb: modal.Sandbox, targets: list[tuple[str, int]]) -> dict[str, str]:
    p = sb.exec("python3", "-c", PROBE, json.dumps(targets))
    out = p.stdout.read()
    assert p.wait() == 0, p.stderr.read()
    return json.loads(out)


def test_a_sandbox_reaches_the_outside_but_not_the_platform(
    use_platform: Platform, outside: tuple[NodeNetwork, str, int], listener: int
) -> None:
    net, address, port = outside
    # From the host the server is there, and so are the platform's servers.
    with socket.create_connection((address, port), timeout=10) as c:
        assert c.makefile().readline() == "hello\n"
    hosts = _host_addresses()
    assert net.host_address in hosts
    for ip in hosts:
        socket.create_connection((ip, listener), timeout=10).close()

    app = modal.App.lookup("sandbox-network-e2e", create_if_missing=True)
    sb = modal.Sandbox.create(app=app, timeout=120)
    try:
        platform = _platform_targets(use_platform, listener)
        got = _probe(sb, [(address, port), *platform])
        assert got.pop(f"{address}:{port}") == "reached hello", got
        assert len(got) == len(set(platform)), got
        assert not [t for t, r in got.items() if r.startswith("reached")], got
        # Its root owns the namespace, but without CAP_NET_ADMIN (not even
        # in its bounding set) it cannot lift the rules that refuse these.
        status = sb.exec("cat", "/proc/self/status").stdout.read()
        bounding = next(
            int(ln.split()[1], 16) for ln in status.splitlines() if ln.startswith("CapBnd")
        )
        assert not bounding & (1 << 12), status  # CAP_NET_ADMIN
        ifdown = sb.exec("python3", "-c", IFDOWN)
        assert ifdown.wait() != 0 and "PermissionError" in ifdown.stderr.read()
    finally:
        sb.terminate()


def test_a_sandbox_cannot_reach_another_one(use_platform: Platform) -> None:
    app = modal.App.lookup("sandbox-network-e2e", create_if_missing=True)
    one = modal.Sandbox.create("python3", "-c", SERVER, app=app, timeout=120)
    two = modal.Sandbox.create(app=app, timeout=120)
    try:
        port = int(one.stdout.readline())
        # Each has its own stack: inside one, its server answers on its
        # address; from the other, the same address and port lead nowhere.
        assert _probe(one, [("10.0.2.100", port)]) == {f"10.0.2.100:{port}": "reached hello"}
        got = _probe(two, [("10.0.2.100", port), ("10.0.2.2", port)])
        assert not [t for t, r in got.items() if r.startswith("reached")], got
    finally:
        one.terminate()
        two.terminate()


def test_a_function_reaches_the_outside_but_not_the_platform(
    use_platform: Platform, outside: tuple[NodeNetwork, str, int], listener: int
) -> None:
    _, address, port = outside
    platform = _platform_targets(use_platform, listener)
    use_platform.deploy("net_probe.py")
    probe = modal.Function.from_name("net-probe", "probe")
    got = probe.remote([(address, port), *platform])
    assert got.pop(f"{address}:{port}") == "reached hello", got
    assert len(got) == len(set(platform)), got
    assert not [t for t, r in got.items() if r.startswith("reached")], got
    # With a memory snapshot: only its loopback, from the snapshot's start on.
    snapshotted = modal.Function.from_name("net-probe", "probe_snapshotted")
    got = snapshotted.remote([(address, port)])
    assert not got[f"{address}:{port}"].startswith("reached"), got
