"""A network namespace with outbound access only, for untrusted code.

Build steps (``run_commands``, ``pip_install``, a Dockerfile's ``RUN``) and
sandboxes run a user's commands. In the machine's own network namespace they
could reach everything listening there: the platform's NATS and Postgres,
the gateway, any service bound to loopback. So each gets a network namespace
of its own, connected to the outside by ``slirp4netns`` (Debian's 1.2.0,
installed by ``make setup``):

- the namespace is held by a small process (``unshare --net`` running a
  shell that waits on its stdin), so runc joins it by path and it lives
  exactly as long as its user: closing the holder's stdin ends it, and so
  does the service dying;
- ``slirp4netns --configure --disable-host-loopback`` gives it ``tap0``
  (10.0.2.100, gateway 10.0.2.2, DNS forwarder 10.0.2.3) and carries its
  TCP/UDP through ordinary sockets of the service's process: the
  namespace's 127.0.0.1 is its own loopback, and 10.0.2.2 does not lead to
  the host's;
- slirp's sockets are the host's, so a connection to one of the host's own
  addresses (192.0.2.2:4222, ...) would still arrive: an ``iptables``
  OUTPUT rule in the namespace rejects every address the host holds at its
  start, and the ``deny`` addresses the caller adds (the platform's servers
  on other machines). The namespace belongs to the host's user namespace:
  a container in a user namespace of its own has no CAP_NET_ADMIN over it,
  so it cannot remove the rules.
- each namespace has its own slirp: another container's namespace is not
  routed to, and nothing listens on the host for it.

slirp4netns rather than a veth pair with NAT: it needs no change to the
host's firewall, forwarding sysctl or routes (which other parts of the
platform share), no address plan, and nothing to clean up if the service is
killed (slirp4netns exits with its exit fd, the holder with its stdin). Its
user-space TCP is slower than a veth, which does not matter for package
downloads or a sandbox's HTTP calls. Without IPv6 (slirp's is experimental)
the namespace reaches the outside over IPv4 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from thaw_core.config import split_urls

# slirp4netns's defaults with --configure.
SLIRP_HOST_ALIAS = "10.0.2.2"
SLIRP_DNS = "10.0.2.3"
_MTU = "65520"
_READY_TIMEOUT_S = 30.0


class OutboundNetError(RuntimeError):
    """The namespace could not be made; the message says why."""


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise OutboundNetError(
            f"outbound-only network namespaces need {name!r}, "
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
        raise OutboundNetError(f"{Path(argv[0]).name} failed: {err.decode(errors='replace')}")
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


def url_addresses(urls: Iterable[str]) -> list[str]:
    """The IPv4 addresses the hosts of ``urls`` resolve to (each may be a
    comma-separated list, as a NATS cluster's): the platform's servers, for
    ``deny``. Blocks on DNS: call it in a thread."""
    found: set[str] = set()
    for url in urls:
        for one in split_urls(url):
            host = urlsplit(one).hostname
            if not host:
                continue  # file:// blob stores, or nothing
            with contextlib.suppress(OSError):
                for *_, addr in socket.getaddrinfo(host, None, socket.AF_INET):
                    found.add(str(addr[0]))
    return sorted(found, key=ipaddress.ip_address)


def reject_rules(addresses: Sequence[str]) -> str:
    """``iptables-restore`` input: nothing leaves for ``addresses``.

    Loopback addresses are left out: in the namespace they are its own
    ``lo``, which never leads to slirp (the host's loopback is reached, if at
    all, through the host alias, always rejected). Rejected, they cut the
    namespace off from itself: a ``web_server``'s runtime never reached the
    server it proxies to (the rejection's ICMP, sent to 127.0.0.1 too, was
    dropped by the same rule, so each connect hung rather than failed)."""
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for addr in [SLIRP_HOST_ALIAS, *addresses]:
        if ipaddress.ip_address(addr).is_loopback:
            continue
        lines.append(f"-A OUTPUT -d {addr}/32 -j REJECT --reject-with icmp-port-unreachable")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def resolv_conf(host: Path = Path("/etc/resolv.conf")) -> str:
    """The namespace's resolv.conf: slirp's DNS forwarder (it asks the host's
    resolvers, also one on the host's loopback), the host's search domains."""
    keep = []
    with contextlib.suppress(OSError):
        for line in host.read_text().splitlines():
            if line.split()[:1] in (["search"], ["domain"], ["options"]):
                keep.append(line)
    return "\n".join([f"nameserver {SLIRP_DNS}", *keep]) + "\n"


class Namespaces(NamedTuple):
    """Paths for the OCI config's ``network`` (and ``user``) namespaces."""

    net: str
    user: str  # "" without ``ids``


@contextlib.asynccontextmanager
async def outbound_netns(
    deny: Sequence[str] = (), ids: tuple[int, int] | None = None
) -> AsyncIterator[Namespaces]:
    """A fresh network namespace with outbound access only, less ``deny``
    (IPv4 addresses) and the host's own addresses.

    ``ids`` (host base id, count): the namespace belongs to a new user
    namespace mapping ``0..count-1`` to them, for a container in a user
    namespace to join with it. runc 1.1's ``exec`` joins a container's user
    namespace before its network one, so that one must belong to the user
    namespace (a host-owned one refuses the ``setns``; so does its sysfs the
    container's mount). The container's root then owns it, but without
    CAP_NET_ADMIN in its capability set it cannot change its firewall.
    """
    slirp = _tool("slirp4netns")
    unshare, nsenter, restore = _tool("unshare"), _tool("nsenter"), _tool("iptables-restore")
    addresses = sorted({*await host_addresses(), *deny}, key=ipaddress.ip_address)
    holder = await asyncio.create_subprocess_exec(
        unshare, *(["--user"] if ids is not None else []), "--net", "--", "/bin/sh", "-c", "echo ready; read _",
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
        # Never wire the service's own namespace: unshare must have made a new one.
        if said.strip() != b"ready" or os.stat(netns).st_ino == os.stat("/proc/self/ns/net").st_ino:
            raise OutboundNetError("unshare --net did not make a network namespace")
        if ids is not None:
            # Written from here (root's), not by unshare: its --map-users
            # needs newuidmap, which setup does not install.
            for name in ("uid_map", "gid_map"):
                Path(f"/proc/{holder.pid}/{name}").write_text(f"0 {ids[0]} {ids[1]}\n")
        # In a mount namespace of its own, private: --enable-sandbox makes
        # its own with "/" private but not recursively, so its pivot_root's
        # lazy unmount of the old root propagated to the host's shared mounts
        # (every /run/netns/* mount vanished with the first container).
        proc = await asyncio.create_subprocess_exec(
            unshare, "--mount", "--propagation", "private",
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
            raise OutboundNetError(f"slirp4netns failed: {err.decode(errors='replace')}")
        await _output(nsenter, f"--net={netns}", restore, stdin=reject_rules(addresses).encode())
        yield Namespaces(netns, f"/proc/{holder.pid}/ns/user" if ids is not None else "")
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
