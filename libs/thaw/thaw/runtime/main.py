"""The runtime process: ``bootstrap.py`` calls :func:`main`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

from thaw.runtime.env import RuntimeEnv
from thaw.runtime.log import log, setup_logging
from thaw.runtime.runtime import Runtime


async def _run(runtime: Runtime) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.shutdown)
    return await runtime.run()


def main() -> None:
    setup_logging()
    runtime = Runtime(RuntimeEnv.from_environ())
    # No asyncio.run(): its cleanup would wait for user tasks that ignore
    # cancellation. Once run() returns, the process ends whatever still runs.
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(_run(runtime))
    except BaseException:  # noqa: BLE001 - a bug of ours: say so, then exit non-zero
        log.exception("the runtime failed")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe
            stream.flush()
    # os._exit, not sys.exit: threads of cancelled sync inputs must not keep
    # the process alive after it answered for them.
    os._exit(code)
