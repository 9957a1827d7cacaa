"""`thaw status` and `thaw down`: look at / stop a stack from outside it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import psutil
from thaw_core import permissions
from thaw_core.config import Settings

from thaw.stack import health
from thaw.stack.parts import AGENT, SERVICES, nats_auth
from thaw.stack.state import StackPaths, pid_alive, stack_processes


@dataclass(frozen=True)
class PartStatus:
    name: str
    kind: str
    pid: int | None
    health: str  # "ok" or the error
    port: str
    restarts: int = 0

    @property
    def ok(self) -> bool:
        return self.health == "ok"


@dataclass(frozen=True)
class StackStatus:
    state_dir: str
    supervisor_pid: int | None
    state: str  # "ready", "starting", "stopping", "down"
    parts: list[PartStatus]
    gateway_url: str = ""

    @property
    def healthy(self) -> bool:
        return (
            self.supervisor_pid is not None and bool(self.parts) and all(p.ok for p in self.parts)
        )


def stack_settings(settings: Settings) -> Settings:
    """The settings the running stack uses (ports etc. from its stack.json),
    falling back to ours."""
    st = StackPaths(settings.state_dir).read_state()
    if st and isinstance(st.get("settings"), dict):
        env = dict(st["settings"])
        if settings.token:
            env["THAW_TOKEN"] = settings.token
        return Settings.from_env(env)
    return settings


async def stack_status(settings: Settings) -> StackStatus:
    paths = StackPaths(settings.state_dir)
    sup = paths.live_pid()
    st = paths.read_state() if sup is not None else None
    if sup is None or st is None:
        return StackStatus(str(paths.state_dir), sup, "down" if sup is None else "starting", [])
    s = stack_settings(settings)
    parts: dict[str, Any] = st.get("parts", {})
    names = list(parts) or ["nats", "postgres", "blob", *SERVICES] + (
        [AGENT] if st.get("with_agent") else []
    )
    service_names = [n for n in names if parts.get(n, {}).get("kind", "service") == "service"]
    # Each nats-server by itself (a cluster has several).
    nats_names = [n for n in names if n == "nats" or n.startswith("nats-")]
    admin = nats_auth(paths).creds(permissions.ADMIN)
    nats_h, pg_h, blob_h, svc_h = await asyncio.gather(
        asyncio.gather(
            *(
                health.check_nats(
                    f"nats://127.0.0.1:{parts[n]['port']}" if n in parts else s.nats_url, admin
                )
                for n in nats_names
            )
        ),
        health.check_postgres(s),
        health.check_blob(s.blob_url),
        health.check_services(
            s.nats_url, service_names, nats_auth(paths).creds(permissions.ADMIN)
        ),
    )
    out = []
    for n in names:
        info = parts.get(n, {})
        pid = info.get("pid")
        if n in nats_names:
            h = nats_h[nats_names.index(n)]
        elif n == "postgres":
            h = pg_h
        elif n == "blob":
            h = blob_h
        else:
            sh = svc_h.get(n)
            h = sh.status if sh else "unknown"
            if sh is not None and sh.pid and pid and sh.pid != pid:
                h = f"answered by pid {sh.pid}, expected {pid}"
        if info.get("kind") != "dir" and (pid is None or not pid_alive(pid)):
            h = "not running" + (f" ({h})" if h != "ok" else "")
        out.append(
            PartStatus(
                name=n,
                kind=info.get("kind", "service"),
                pid=pid,
                health=h,
                port=info.get("port_label") or (str(info["port"]) if info.get("port") else "-"),
                restarts=int(info.get("restarts") or 0),
            )
        )
    return StackStatus(str(paths.state_dir), sup, st.get("state", "?"), out, s.gateway_url)


def stop_stack(settings: Settings, *, timeout_s: float = 60.0) -> tuple[bool, str]:
    """Signal the supervisor and wait for it (and what it started) to exit.

    Returns (False, why) only when a stack runs and did not stop in time;
    nothing to stop is not a failure."""
    paths = StackPaths(settings.state_dir)
    pid = paths.live_pid()
    if pid is None:
        left = stack_processes(paths.state_dir)
        if left:
            for p in left:
                with contextlib.suppress(psutil.Error):
                    p.terminate()
            return True, f"no supervisor running; stopped {len(left)} leftover process(es)"
        return True, f"no thaw stack is running on {paths.state_dir}"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True, f"stopped the thaw stack (pid {pid})"
        time.sleep(0.1)
    return False, f"the stack (pid {pid}) did not stop within {timeout_s:g}s"
