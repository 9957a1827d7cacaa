"""What a container's runtime and the agent say over its socket.

Configure (the agent's first frame on every connection: who the container
is and its environment), Hello, then Ready or InitFailed, then Outputs
until the connection ends; a ``VolumeRequest`` (``vol.commit()`` or
``reload()``, from an enter hook or an input) may come at any point after
Hello and is answered in the background. A runtime starting for a snapshot says
``SnapshotReady`` before Ready: the container is checkpointed then
(``checkpoint.snapshot``) and the talk goes on over the new connection,
which starts with Configure again. Configure carries the container's
secrets, except on the first connection of a runtime to be snapshotted.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from thaw_core.container_protocol import (
    Configure,
    Hello,
    InitFailed,
    Output,
    Ready,
    SnapshotReady,
    StoreBlob,
    StoreRequest,
    VolumeRequest,
    WebPull,
    WebSend,
    WebSocketSend,
)

from thaw_agent import checkpoint
from thaw_agent.channel import RuntimeChannel
from thaw_agent.secrets import SecretsUnavailable
from thaw_agent.snapshots import Checkpoint, Restore

if TYPE_CHECKING:
    from thaw_agent.container import Container

# The runtime connects within seconds; this only catches one that never will.
CONNECT_TIMEOUT_S = 120.0


async def _connect(
    c: Container, channel: RuntimeChannel, restored: bool, *, with_secrets: bool = True
) -> None:
    """Accept the runtime's connection, tell it who it is and its environment,
    and wait for its Hello."""
    await channel.accept(CONNECT_TIMEOUT_S)
    env = await c.host.container_env(c, with_secrets=with_secrets)
    await channel.send(Configure(container_id=c.id, env=env, restored=restored))
    hello = await channel.read()
    if not isinstance(hello, Hello) or hello.container_id != c.id:
        raise ValueError(f"expected Hello from container {c.id}, got {hello!r}")


async def _next(c: Container, channel: RuntimeChannel) -> object:
    """The runtime's next frame other than a volume or store request (those are served)."""
    while True:
        frame = await channel.read()
        match frame:
            case VolumeRequest():
                c.volumes.serve(frame, channel.send)
            case StoreRequest():
                c.host.stores.serve(c.id, frame, channel.send)
            case StoreBlob():
                c.host.stores.serve_blob(frame, channel.send)
            case _:
                return frame


async def converse(c: Container) -> None:
    """The runtime's side of the socket: Hello, Ready | InitFailed, then Outputs."""
    channel = c.channel
    assert channel is not None
    try:
        # A runtime about to be snapshotted gets its secrets only once the
        # snapshot is taken: a snapshot never holds them.
        with c.phases.timed("runtime connect"):
            await _connect(
                c,
                channel,
                restored=isinstance(c.plan, Restore),
                with_secrets=not isinstance(c.plan, Checkpoint),
            )
        with c.phases.timed("to ready"):
            first = await _next(c, channel)
        if isinstance(first, SnapshotReady) and isinstance(c.plan, Checkpoint):
            channel = await checkpoint.snapshot(c, c.plan)
            # Restored in place, or resumed cold.
            await _connect(c, channel, restored=c.restored)
            first = await _next(c, channel)
        match first:
            case Ready(max_inputs=n):
                if c.ready_gate is not None:
                    waited = time.perf_counter()
                    try:
                        await c.ready_gate
                    except Exception as e:  # noqa: BLE001 - never Ready, whatever it was
                        c.fail(f"not ready: {e}")
                        return
                    c.ready_gate_wait_s = time.perf_counter() - waited
                    c.phases.add("verify wait", c.ready_gate_wait_s)
                if c.state != "starting":
                    return
                c.mark_ready(n)
            case InitFailed():
                c.init_failure = first
                c.system_log(f"initialisation failed: {first.error}\n{first.traceback}")
                c.fail(f"initialisation failed: {first.error}")
                return
            case None:
                raise ConnectionError("the runtime closed its connection before it was ready")
            case _:
                raise ValueError(f"expected Ready or InitFailed, got {type(first).__name__}")
        while True:
            frame = await _next(c, channel)
            match frame:
                case Output():
                    c.host.events.container_output(c, frame)
                case WebPull() | WebSend() | WebSocketSend():
                    c.host.events.container_web(c, frame)
                case None:
                    if not c.ending:
                        raise ConnectionError("the runtime closed its connection")
                    return
                case _:
                    raise ValueError(f"unexpected {type(frame).__name__} from the runtime")
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        c.fail(f"the runtime did not connect within {CONNECT_TIMEOUT_S:g}s")
    except SecretsUnavailable as e:
        c.fail(f"cannot start without its secrets: {e}")
    except Exception as e:  # noqa: BLE001 - whatever broke, the container is done for
        if not c.ending:
            # The process may be dying right now; its exit says more than a broken socket.
            await c.wait_exited(0.5)
            c.fail(f"runtime protocol error: {type(e).__name__}: {e}")
