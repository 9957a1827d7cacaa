"""Build steps run in a network namespace of their own with outbound access
only: a ``run_commands`` step cannot connect to the platform's NATS,
Postgres or gateway on 127.0.0.1, nor to a service listening on all of the
host's addresses through any of them, while ``pip_install`` in the same
image still downloads from the package index."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import thaw as modal
from fixtures.images import BUILD_TIMEOUT_S, IMAGE_SITE
from fixtures.platform import Platform

APPS = Path(__file__).parent / "apps"

pytestmark = [pytest.mark.usefixtures("use_platform"), pytest.mark.slow]


def host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, check=True)
    return [
        a["local"]
        for link in json.loads(out.stdout)
        for a in link.get("addr_info", [])
        if a.get("local") and not a["local"].startswith("127.")
    ]


@pytest.fixture
def listener() -> Iterator[int]:
    """A service on all of the host's addresses, as a NATS or Postgres
    deployed to listen beyond loopback would be."""
    with socket.create_server(("0.0.0.0", 0), backlog=16) as s:
        yield s.getsockname()[1]


def test_a_build_step_reaches_the_package_index_but_not_the_platform(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, listener: int
) -> None:
    nats = urlsplit(platform.base_env["THAW_NATS_URL"]).port
    postgres = urlsplit(platform.base_env["THAW_DATABASE_URL"]).port
    others = host_addresses()
    assert others, "the host has no address besides loopback to try"
    # From the host, each is there to be reached.
    for target in (("127.0.0.1", nats), ("127.0.0.1", postgres), (others[0], listener)):
        socket.create_connection(target, timeout=5).close()
    targets = [f"127.0.0.1:{p}" for p in (nats, postgres, platform.gateway_port, listener)]
    targets += [f"{a}:{p}" for a in others for p in (listener, nats, platform.gateway_port)]
    monkeypatch.setenv("IMG_PROBE_TARGETS", " ".join(targets))

    out = platform.cli("deploy", str(APPS / "img_netprobe.py"), timeout=BUILD_TIMEOUT_S)
    assert out.returncode == 0, out.stdout + out.stderr + platform.logs()
    got = modal.Function.from_name("img-netprobe", "probe").remote()

    # pyjokes is on no local wheel dir or index of this machine: the index gave it.
    assert got.pop("pyjokes").startswith(IMAGE_SITE), got
    assert set(got) == set(targets), got
    reached = {t: why for t, why in got.items() if why == "connected"}
    assert not reached, f"a build step connected to the host: {got}"
    assert all("ConnectionRefused" in why or "timed out" in why for why in got.values()), got
