"""`thaw up --detach`: run the supervisor as a daemon and return once it is up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from thaw_core.config import Settings

from thaw.stack.state import StackPaths
from thaw.stack.supervisor import StackInfo, StartupFailed, tail

# The re-executed supervisor knows from this that it runs detached.
DETACHED_ENV = "THAW_STACK_DETACHED"


def start_detached(settings: Settings, *, with_agent: bool, startup_timeout_s: float) -> StackInfo:
    """Re-exec `thaw up` in a new session (setsid) with its output in
    ``logs/stack.log``; wait until it reports ready. Raises StartupFailed with
    the log's tail when it exits or does not come up in time."""
    paths = StackPaths(settings.state_dir)
    paths.make()
    log_path = paths.log("stack")
    argv = [sys.executable, "-m", "thaw.cli", "up", "--timeout", str(startup_timeout_s)]
    if with_agent:
        argv.append("--with-agent")
    env = dict(os.environ)
    env.update(settings.to_env())
    env[DETACHED_ENV] = "1"
    start_offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(paths.state_dir),
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + startup_timeout_s + 30
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            raise StartupFailed(
                f"the stack exited with code {rc} while starting; {log_path}:\n"
                + _log_since(log_path, start_offset)
            )
        st = paths.read_state()
        if st and st.get("pid") == proc.pid and st.get("state") == "ready":
            token = paths.admin_token(create=False) or ""
            return StackInfo(
                gateway_url=st.get("gateway_url", settings.gateway_url),
                admin_token=token,
                state_dir=paths.state_dir,
                logs_dir=paths.logs_dir,
                pid=proc.pid,
            )
        time.sleep(0.1)
    # Not up in time, and it did not give up on its own: stop it.
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    raise StartupFailed(
        f"the stack did not come up in time; {log_path}:\n" + _log_since(log_path, start_offset)
    )


def _log_since(path, offset: int, n: int = 60) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        return "\n".join(text.splitlines()[-n:])
    except OSError:
        return tail(path, n)


__all__ = ["DETACHED_ENV", "start_detached"]
