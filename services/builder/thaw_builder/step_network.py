"""A build step's own network namespace, with outbound access only.

A build step runs a user's commands (``run_commands``, ``pip_install``, a
Dockerfile's ``RUN``). In the builder machine's network namespace it could
reach everything listening there: the platform's NATS and Postgres, the
gateway, any service bound to loopback. So each step gets a network
namespace of its own, connected to the outside by ``slirp4netns`` (Debian's
1.2.0, installed by ``make setup``):

- the namespace is held by a small process (``unshare --net`` running a
  shell that waits on its stdin), so runc joins it by path and it lives
  exactly as long as the step: closing the holder's stdin ends it, and so
  does the builder dying;
- ``slirp4netns --configure --disable-host-loopback`` gives it ``tap0``
  (10.0.2.100, gateway 10.0.2.2, DNS forwarder 10.0.2.3) and carries its
  TCP/UDP through ordinary sockets of the builder's process: the step's
  127.0.0.1 is its own loopback, and 10.0.2.2 does not lead to the host's;
- slirp's sockets are the host's, so a connection to one of the host's own
  addresses (192.0.2.2:4222, ...) would still arrive: an ``iptables``
  OUTPUT rule in the step's namespace rejects every address the host holds
  at the step's start. The step has no CAP_NET_ADMIN to remove it.

slirp4netns rather than a veth pair with NAT: it needs no change to the
host's firewall, forwarding sysctl or routes (which other parts of the
platform and other builders share), no address plan, and nothing to clean
up if the builder is killed (slirp4netns exits with its exit fd, the holder
with its stdin). Its user-space TCP is slower than a veth, which does not
matter for package downloads. Without IPv6 (slirp's is experimental) a step
reaches the outside over IPv4 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

# slirp4netns's defaults with --configure.
SLIRP_HOST_ALIAS = "10.0.2.2"
SLIRP_DNS = "10.0.2.3"
_MTU = "65520"
_READY_TIMEOUT_S = 30.0


class StepNetworkError(RuntimeError):
    """The step's network namespace could not be made; the message says why."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StepNetworkError(
            f"build steps run in their own network namespace and need {name!r}, "
            "which is not installed (make setup installs it)"
        )
    return path


async def _output(*argv: str, stdin: bytes | None = None) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin)
    if proc.returncode != 0:
        raise StepNetworkError(f"{Path(argv[0]).name} failed: {err.decode(errors='replace')}")
    return out


async def host_addresses() -> list[str]:
    """Every IPv4 address on the host's interfaces (loopback's too)."""
    out = await _output(_tool("ip"), "-j", "-4", "addr", "show")
    found = {
        info["local"]
        for link in json.loads(out or b"[]")
        for info in link.get("addr_info", [])
        if info.get("local")
    }
    return sorted(found, key=ipaddress.ip_address)


def reject_rules(addresses: list[str]) -> str:
    """``iptables-restore`` input: nothing leaves for the host's addresses."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for addr in [SLIRP_HOST_ALIAS, *addresses]:
        lines.append(f"-A OUTPUT -d {addr}/32 -j REJECT --reject-with icmp-port-unreachable")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def resolv_conf(host: Path = Path("/etc/resolv.conf")) -> str:
    """The step's resolv.conf: slirp's DNS forwarder (it asks the host's
    resolvers, also one on the host's loopback), the host's search domains."""
    keep = []
    with contextlib.suppress(OSError):
        for line in host.read_text().splitlines():
            if line.split()[:1] in (["search"], ["domain"], ["options"]):
                keep.append(line)
    return "\n".join([f"nameserver {SLIRP_DNS}", *keep]) + "\n"


@contextlib.asynccontextmanager
async def step_network() -> AsyncIterator[str]:
    """A fresh network namespace with outbound access only, for one step;
    yields its path for the OCI config's ``network`` namespace."""
    slirp = _tool("slirp4netns")
    unshare, nsenter, restore = _tool("unshare"), _tool("nsenter"), _tool("iptables-restore")
    addresses = await host_addresses()
    holder = await asyncio.create_subprocess_exec(
        unshare, "--net", "--", "/bin/sh", "-c", "echo ready; read _",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
    proc: asyncio.subprocess.Process | None = None
    try:
        assert holder.stdout is not None
        said = await asyncio.wait_for(holder.stdout.readline(), _READY_TIMEOUT_S)
        netns = f"/proc/{holder.pid}/ns/net"
        # Never wire the builder's own namespace: unshare must have made a new one.
        if said.strip() != b"ready" or os.stat(netns).st_ino == os.stat("/proc/self/ns/net").st_ino:
            raise StepNetworkError("unshare --net did not make a network namespace")
        proc = await asyncio.create_subprocess_exec(
            slirp, "--configure", f"--mtu={_MTU}", "--disable-host-loopback",
            "--enable-sandbox", "--enable-seccomp",
            f"--ready-fd={ready_w}", f"--exit-fd={exit_r}", str(holder.pid), "tap0",
            pass_fds=(ready_w, exit_r),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        os.close(ready_w)
        ready_w = -1
        ready = await asyncio.wait_for(asyncio.to_thread(os.read, ready_r, 1), _READY_TIMEOUT_S)
        if ready != b"1":
            err = b""
            if proc.stderr is not None:
                with contextlib.suppress(TimeoutError):
                    err = await asyncio.wait_for(proc.stderr.read(), 5)
            raise StepNetworkError(f"slirp4netns failed: {err.decode(errors='replace')}")
        await _output(nsenter, f"--net={netns}", restore, stdin=reject_rules(addresses).encode())
        yield netns
    finally:
        for fd in (ready_r, ready_w, exit_w):
            if fd >= 0:
                os.close(fd)  # closing exit_w tells slirp4netns to exit
        with contextlib.suppress(OSError):
            os.close(exit_r)
        if proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        if holder.stdin is not None:
            holder.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(holder.wait(), 10)
        with contextlib.suppress(ProcessLookupError):
            holder.kill()
        await holder.wait()
