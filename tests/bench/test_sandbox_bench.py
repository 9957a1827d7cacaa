"""Sandbox start speed, measured in one run and printed side by side.

- ``Sandbox.create`` to the end of its first ``exec("true")`` (the goal: under
  300 ms on a warm node), and its two parts: create alone, and one exec.
- The floor, on the same machine in the same run: a bare ``runc run
  --detach`` of the same base rootfs (read-only, no overlay, no cgroup
  limits, no NATS, no gateway) followed by one ``runc exec true``.

``THAW_BENCH_SANDBOXES`` (default 10) sets how many of each. Run with
``make bench``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import thaw as modal
from fixtures.platform import Platform
from thaw_core import hosttools
from thaw_core.oci import standard_mounts

N = int(os.environ.get("THAW_BENCH_SANDBOXES", "10"))

pytestmark = pytest.mark.timeout(1800)


def ms(xs: list[float]) -> str:
    return f"p50 {statistics.median(xs) * 1000:7.1f} ms  max {max(xs) * 1000:7.1f} ms"


def bare_runc(tmp: Path, n: int) -> list[float]:
    """``runc run --detach`` of the base rootfs and one ``runc exec true``, timed."""
    runc, root = str(hosttools.runc_path()), tmp / "runc-root"
    bundle = tmp / "bundle"
    bundle.mkdir()
    config = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sleep", "600"], "env": ["PATH=/usr/bin:/bin"], "cwd": "/",
        },
        "root": {"path": str(hosttools.default_rootfs()), "readonly": True},
        "mounts": standard_mounts(),
        "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]},
    }  # fmt: skip
    (bundle / "config.json").write_text(json.dumps(config))
    out = []
    for _ in range(n):
        cid = f"bench-{uuid.uuid4().hex[:8]}"
        base = [runc, "--root", str(root)]
        t = time.perf_counter()
        subprocess.run([*base, "run", "--detach", "--bundle", str(bundle), cid], check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([*base, "exec", cid, "true"], check=True)
        out.append(time.perf_counter() - t)
        subprocess.run([*base, "delete", "--force", cid], check=True)
    return out


def test_sandbox_create_to_first_exec(use_platform: Platform, tmp_path: Path) -> None:
    app = modal.App.lookup("bench-sandbox", create_if_missing=True)
    # One first, unmeasured: the node's first start warms its caches (a warm node).
    modal.Sandbox.create(app=app, timeout=60).terminate()
    to_first_exec, create_only, one_exec = [], [], []
    for _ in range(N):
        t0 = time.perf_counter()
        sb = modal.Sandbox.create(app=app, timeout=120)
        t1 = time.perf_counter()
        assert sb.exec("true").wait() == 0
        t2 = time.perf_counter()
        assert sb.exec("true").wait() == 0
        t3 = time.perf_counter()
        sb.terminate()
        to_first_exec.append(t2 - t0)
        create_only.append(t1 - t0)
        one_exec.append(t3 - t2)
    floor = bare_runc(tmp_path, N)
    ratio = statistics.median(to_first_exec) / statistics.median(floor)
    print()
    print(f"sandbox create -> first exec done   {ms(to_first_exec)}   (goal: p50 under 300 ms)")
    print(f"  of which Sandbox.create           {ms(create_only)}")
    print(f"  one more exec('true').wait()      {ms(one_exec)}")
    print(f"bare runc run -d + runc exec true   {ms(floor)}")
    print(f"thaw / bare runc                    {ratio:.1f}x")
