"""Run one build step's command in a runc container and keep what it changed.

The container's root is an overlay: the parent layers (read-only lowers) and
a fresh upper dir, which afterwards holds exactly the step's changes, in
overlay's format (whiteouts for deletions) — the layer. It runs in a network
namespace of its own with outbound access only
(``thaw_core.outbound_netns``): pip and apt reach their registries, but
nothing listening on the builder machine (the platform's NATS, Postgres,
gateway, anything on loopback) is reachable from a step. It has Docker's default capability set (none of which lets it
change its namespace's firewall) so that apt can drop privileges and dpkg
can chown.

Build-only mounts (pip's settings and cache, a requirements file) live under
``/.thaw-build``; the mount points runc creates for them are removed from
the upper dir afterwards, so they never reach a layer. ``/tmp`` is a tmpfs
for the same reason.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import resource
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from thaw_core import hosttools, layers
from thaw_core.image_users import ROOT, ImageUser, image_user, oci_user
from thaw_core.oci import MASKED_PATHS, READONLY_PATHS, standard_mounts
from thaw_core.outbound_netns import outbound_netns, resolv_conf
from thaw_core.private_file import write_private

from thaw_builder.pipconf import Mount

log = logging.getLogger(__name__)

BUILD_DIR_IN_CONTAINER = "/.thaw-build"
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "PYTHONUNBUFFERED": "1",
}
# Docker's default set, enough for apt (setuid to _apt), dpkg (chown, mknod),
# pip and most build scripts. The network ones act on the step's own
# namespace only; without CAP_NET_ADMIN it cannot lift its OUTPUT rules.
_CAPS = [
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
]
TAIL_LINES = 40
_MAX_LINE = 4000
_READ_CHUNK = 1 << 16

Stream = Literal["stdout", "stderr"]
OnLine = Callable[[Stream, str], None]


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]
    cwd: str = "/"
    # Read-only binds (pip settings, a requirements file) and read-write ones (pip's cache).
    ro_mounts: Sequence[Mount] = ()
    rw_mounts: Sequence[Mount] = ()
    timeout_s: float = 1800.0
    # A Dockerfile's USER, looked up in the image's own /etc/passwd ("": root).
    user: str = ""


@dataclass
class Outcome:
    exit_code: int
    tail: list[str] = field(default_factory=list)
    timed_out: bool = False


class StepContainer:
    """One build step's container, in the scratch dir ``work`` (on the
    layer cache's file system, so that ``upper`` can be renamed into it)."""

    def __init__(self, work: Path, *, runc_root: Path, container_id: str) -> None:
        self.work = work
        self.runc_root = runc_root
        self.container_id = container_id
        self.upper = work / "upper"
        self.rootfs = work / "rootfs"
        self.bundle = work / "bundle"

    async def run(self, lowerdirs: Sequence[Path], cmd: Command, on_line: OnLine) -> Outcome:
        """Run ``cmd`` on an overlay of ``lowerdirs`` (base first). Afterwards
        ``self.upper`` holds the step's changes, whatever the exit code."""
        for d in (self.upper, self.work / "ovl-work", self.rootfs, self.bundle):
            d.mkdir(parents=True, exist_ok=True)
        layers.overlay_mount(lowerdirs, self.rootfs, upper=self.upper, work=self.work / "ovl-work")
        try:
            user = image_user(cmd.user, self.rootfs)
            resolv = self.work / "resolv.conf"
            resolv.write_text(resolv_conf())
            async with outbound_netns() as ns:
                config = _config(self.rootfs, self.container_id, cmd, user, ns.net, resolv)
                # 0600: a step's environment may carry its secrets.
                write_private(self.bundle / "config.json", json.dumps(config))
                return await self._run(cmd, on_line)
        finally:
            await asyncio.shield(self._cleanup())

    async def _run(self, cmd: Command, on_line: OnLine) -> Outcome:
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

        def line(stream: Stream, text: str) -> None:
            tail.append(text)
            on_line(stream, text)

        proc = await asyncio.create_subprocess_exec(
            *self._runc("run", "--bundle", str(self.bundle), self.container_id),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        readers = asyncio.gather(
            _pump(proc.stdout, "stdout", line), _pump(proc.stderr, "stderr", line)
        )
        timed_out = False
        try:
            try:
                await asyncio.wait_for(proc.wait(), cmd.timeout_s)
            except TimeoutError:
                timed_out = True
                line("stderr", f"thaw: the step ran past its {cmd.timeout_s:g}s limit; killed")
                await self._kill()
                await proc.wait()
            await readers
        except BaseException:
            await asyncio.shield(self._kill())
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            readers.cancel()
            raise
        return Outcome(
            proc.returncode if proc.returncode is not None else -1, list(tail), timed_out
        )

    def _runc(self, *args: str) -> list[str]:
        return [str(hosttools.runc_path()), "--root", str(self.runc_root), *args]

    async def _kill(self) -> None:
        await run_quietly(self._runc("kill", self.container_id, "KILL"))

    async def _cleanup(self) -> None:
        await run_quietly(self._runc("delete", "--force", self.container_id))
        await asyncio.to_thread(layers.unmount, self.rootfs)
        # runc made these mount points in the upper dir; they are not the step's work.
        await asyncio.to_thread(
            shutil.rmtree, self.upper / BUILD_DIR_IN_CONTAINER.lstrip("/"), True
        )
        await asyncio.to_thread(shutil.rmtree, self.work / "ovl-work", True)


async def _pump(
    reader: asyncio.StreamReader, stream: Stream, on_line: Callable[[Stream, str], None]
) -> None:
    """Split a pipe into lines as they come (progress output ends lines with \\r)."""
    pending = b""
    while chunk := await reader.read(_READ_CHUNK):
        pending += chunk
        *lines, pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        for raw in lines:
            on_line(stream, raw[:_MAX_LINE].decode("utf-8", "replace"))
        if len(pending) > _MAX_LINE:
            on_line(stream, pending[:_MAX_LINE].decode("utf-8", "replace"))
            pending = b""
    if pending:
        on_line(stream, pending[:_MAX_LINE].decode("utf-8", "replace"))


async def run_quietly(argv: list[str]) -> None:
    with contextlib.suppress(OSError):
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await proc.wait()


def _bind(m: Mount, *, readonly: bool) -> dict[str, Any]:
    return {
        "destination": m.destination,
        "type": "bind",
        "source": str(m.source),
        "options": ["rbind", "ro" if readonly else "rw", "nosuid", "nodev"],
    }


def _nofile() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)


def _config(
    rootfs: Path, container_id: str, cmd: Command, user: ImageUser, netns: str, resolv: Path
) -> dict[str, Any]:
    for m in (*cmd.ro_mounts, *cmd.rw_mounts):
        if not m.destination.startswith(BUILD_DIR_IN_CONTAINER + "/"):
            raise ValueError(f"build mounts live under {BUILD_DIR_IN_CONTAINER}: {m.destination}")
    mounts: list[dict[str, Any]] = [
        *standard_mounts(),
    ]
    # slirp's DNS forwarder, not the resolvers of the day the rootfs was made;
    # bound over the image's file, so it never reaches a layer.
    mounts.append(_bind(Mount(resolv, "/etc/resolv.conf"), readonly=True))
    mounts += [_bind(m, readonly=True) for m in cmd.ro_mounts]
    mounts += [_bind(m, readonly=False) for m in cmd.rw_mounts]
    env = dict(cmd.env)
    if user != ROOT and env.get("HOME") == BASE_ENV["HOME"]:
        env["HOME"] = user.home
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": oci_user(user),
            "args": list(cmd.argv),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": cmd.cwd,
            "capabilities": {k: list(_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": _nofile(), "soft": _nofile()}],
            "noNewPrivileges": False,
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": "thaw-build",
        "mounts": mounts,
        "linux": {
            "cgroupsPath": f"/thaw-build/{container_id}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [
                *({"type": t} for t in ("pid", "ipc", "uts", "mount")),
                {"type": "network", "path": netns},
            ],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
