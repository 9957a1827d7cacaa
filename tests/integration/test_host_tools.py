"""The host tools that `make setup` installs really checkpoint and restore.

A Python process runs as pid 1 of a runc container on the default rootfs, with
pipes as stdio and its own (empty) network namespace. It keeps a random token
and a counter in memory and reports them on SIGUSR1, on stdout and into a
bind-mounted host dir. The test checkpoints it with the CRIU wrapper and
restores the image (twice, side by side), checking the token survived: the
restored process is the same process, not a fresh start.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fixtures.host import needs_criu
from thaw_core import hosttools

pytestmark = needs_criu

# The process under test: state only in memory, reported on SIGUSR1.
PROGRAM = r"""
import os, secrets, signal, time
token = secrets.token_hex(8)
n = 0
os.makedirs("/var/tmp", exist_ok=True)
held = None
if os.environ.get("HOLD_FILE"):
    # A file kept open in the writable layer: CRIU must carry it over.
    held = open("/var/tmp/held", "w")
    held.write(token)
    held.flush()

def report(*_):
    line = f"{token} {n} {os.getpid()} {os.getsid(0)}"
    with open("/io/state.tmp", "w") as f:
        f.write(line)
    os.rename("/io/state.tmp", "/io/state")
    print("state", line, flush=True)

signal.signal(signal.SIGUSR1, report)
print("ready", flush=True)
while True:
    n += 1
    time.sleep(0.002)
"""


@dataclass
class State:
    token: str
    counter: int
    pid: int
    sid: int


@dataclass
class Host:
    """Containers of one test under a private runc state dir, cleaned up after."""

    base: Path
    state_root: Path
    ids: list[str] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def runc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(hosttools.runc_path()), "--root", str(self.state_root), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)

    def bundle(
        self, name: str, *, overlay: bool, io: Path, env: dict[str, str] | None = None
    ) -> Path:
        """A bundle on the default rootfs: read-only + tmpfs, or an overlay we mount."""
        b = self.base / name
        b.mkdir()
        subprocess.run(
            [str(hosttools.runc_path()), "spec", "--bundle", str(b)], check=True, timeout=30
        )
        cfg = json.loads((b / "config.json").read_text())
        if overlay:
            for d in ("upper", "work", "rootfs"):
                (b / d).mkdir(exist_ok=True)
            self.mount_overlay(b)
            cfg["root"] = {"path": str(b / "rootfs"), "readonly": False}
        else:
            cfg["root"] = {"path": str(hosttools.default_rootfs()), "readonly": True}
            cfg["mounts"].append(
                {
                    "destination": "/var/tmp",
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777"],
                }
            )
        cfg["mounts"].append(
            {"destination": "/io", "type": "bind", "source": str(io), "options": ["rbind", "rw"]}
        )
        proc = cfg["process"]
        proc["terminal"] = False
        proc["args"] = ["/usr/bin/python3", "-u", "-c", PROGRAM]
        proc["env"] += [f"{k}={v}" for k, v in (env or {}).items()]
        # The spec's namespaces include "network" with no path: a fresh, empty
        # netns, which CRIU treats as external (no iptables lock needed).
        assert {"type": "network"} in cfg["linux"]["namespaces"]
        (b / "config.json").write_text(json.dumps(cfg))
        return b

    def mount_overlay(self, b: Path) -> None:
        opts = f"lowerdir={hosttools.default_rootfs()},upperdir={b / 'upper'},workdir={b / 'work'}"
        subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(b / "rootfs")],
            check=True,
            timeout=30,
        )
        self.mounts.append(b / "rootfs")

    def start(self, argv: list[str], cid: str) -> subprocess.Popen[bytes]:
        """Run a detached runc run/restore with pipes for stdio; the container inherits them."""
        self.ids.append(cid)
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.procs.append(p)
        rc = p.wait(timeout=30)
        if rc != 0:
            # Failed: no container holds the pipe, so reading to EOF is safe.
            err = p.stderr.read().decode() if p.stderr else ""
            logs = "".join(
                f"\n--- {log} (tail) ---\n" + "\n".join(log.read_text().splitlines()[-25:])
                for log in self.base.glob("*/*.log")
            )
            pytest.fail(f"{argv} exited {rc}: {err}{logs}")
        return p

    def run(self, bundle: Path, cid: str) -> subprocess.Popen[bytes]:
        argv = [
            str(hosttools.runc_path()),
            "--root",
            str(self.state_root),
            "run",
            "--detach",
            "--bundle",
            str(bundle),
            cid,
        ]
        return self.start(argv, cid)

    def cleanup(self) -> None:
        for cid in self.ids:
            self.runc("delete", "--force", cid, check=False)
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(m)], check=False, capture_output=True)
        for p in self.procs:
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
        shutil.rmtree(self.base, ignore_errors=True)


def readline(p: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    """One line of the container's stdout (the pipe given to runc), with a deadline."""
    assert p.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError("no output from the container")
    return p.stdout.readline().decode().strip()


def ask_state(host: Host, p: subprocess.Popen[bytes], cid: str, io: Path) -> State:
    """Signal the container and read its in-memory state from the pipe and the bind mount."""
    host.runc("kill", cid, "USR1")
    line = readline(p)
    assert line.startswith("state "), line
    token, counter, pid, sid = line.split()[1:]
    assert (io / "state").read_text() == line.removeprefix("state ")
    return State(token, int(counter), int(pid), int(sid))


@pytest.fixture
def host() -> Iterator[Host]:
    base = Path(f"/tmp/thaw-test-host-tools-{uuid.uuid4().hex[:8]}")
    base.mkdir()
    h = Host(base=base, state_root=base / "runc-state")
    try:
        yield h
    finally:
        h.cleanup()


def test_versions() -> None:
    hosttools.versions.cache_clear()
    v = hosttools.versions()
    assert v["criu"].split(".")[0].isdigit() and int(v["criu"].split(".")[0]) >= 4, v
    assert v["runc"], v
    assert v["kernel"] == os.uname().release


def test_criu_check() -> None:
    r = subprocess.run(
        [str(hosttools.criu_path()), "check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Looks good" in r.stdout + r.stderr, r.stdout + r.stderr


def _checkpoint(host: Host, cid: str, image: Path) -> float:
    t = time.monotonic()
    argv = hosttools.runc_checkpoint_cmd(
        cid, image, host.base / f"{cid}-dump", state_root=host.state_root
    )
    r = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        log = host.base / f"{cid}-dump" / "dump.log"
        tail = "\n".join(log.read_text().splitlines()[-30:]) if log.exists() else ""
        pytest.fail(f"runc checkpoint failed: {r.stderr}\n{tail}")
    return time.monotonic() - t


def _restore(host: Host, cid: str, bundle: Path, image: Path) -> subprocess.Popen[bytes]:
    argv = hosttools.runc_restore_cmd(
        cid, bundle, image, host.base / f"{cid}-restore", state_root=host.state_root
    )
    return host.start(argv, cid)


def test_checkpoint_restore_readonly_rootfs(host: Host) -> None:
    """Read-only shared rootfs + tmpfs; one image restored twice side by side."""
    io = host.base / "io"
    io.mkdir()
    bundle = host.bundle("bundle", overlay=False, io=io)
    p = host.run(bundle, "c1")
    assert readline(p) == "ready"
    time.sleep(0.1)
    before = ask_state(host, p, "c1", io)
    assert (before.pid, before.sid) == (1, 1), "must be pid 1 and session leader"

    image = host.base / "image"
    _checkpoint(host, "c1", image)
    assert (image / "descriptors.json").exists()
    assert host.runc("state", "c1", check=False).returncode != 0, "checkpoint stops the container"

    restored = {cid: _restore(host, cid, bundle, image) for cid in ("r1", "r2")}
    for cid, rp in restored.items():
        after = ask_state(host, rp, cid, io)
        assert after.token == before.token, "in-memory state must survive the restore"
        assert after.counter >= before.counter
        assert (after.pid, after.sid) == (1, 1)
    running = json.loads(host.runc("list", "--format", "json").stdout)
    assert {c["id"] for c in running if c["status"] == "running"} == {"r1", "r2"}


def test_checkpoint_restore_overlay_rootfs(host: Host) -> None:
    """Overlay rootfs with an open file in its upper layer, restored into another bundle."""
    io = host.base / "io"
    io.mkdir()
    b1 = host.bundle("b1", overlay=True, io=io, env={"HOLD_FILE": "1"})
    p = host.run(b1, "o1")
    assert readline(p) == "ready"
    before = ask_state(host, p, "o1", io)

    image = host.base / "image"
    _checkpoint(host, "o1", image)
    assert (b1 / "upper/var/tmp/held").read_text() == before.token

    # The new container gets a copy of the old one's writable layer.
    b2 = host.base / "b2"
    b2.mkdir()
    shutil.copytree(b1 / "upper", b2 / "upper", symlinks=True)
    (b2 / "work").mkdir()
    (b2 / "rootfs").mkdir()
    shutil.copy(b1 / "config.json", b2 / "config.json")
    cfg = json.loads((b2 / "config.json").read_text())
    cfg["root"]["path"] = str(b2 / "rootfs")
    (b2 / "config.json").write_text(json.dumps(cfg))
    host.mount_overlay(b2)

    rp = _restore(host, "o2", b2, image)
    after = ask_state(host, rp, "o2", io)
    assert after.token == before.token
    assert after.counter >= before.counter
