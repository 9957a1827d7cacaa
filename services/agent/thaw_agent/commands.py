"""Commands to this node: request/reply on ``thaw.agent.<node>``.

``StartContainer`` is answered once runc started the container (not once it
is Ready: the heartbeat says that), ``StopContainer`` once it is stopped,
``StartSandbox`` once the sandbox runs and its processes can be reached. A
command that cannot be decoded is rejected (``ErrorEvent``) and answered
``CommandReply(ok=False)`` with the reason. Each command runs in its own
task, so a slow start (a bundle download) does not hold up the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec
from thaw_core.bus import Msg
from thaw_core.schema import (
    AgentCommand,
    CommandReply,
    StartContainer,
    StopContainer,
    decoder,
    encode,
)
from thaw_core.schema.sandboxes import StartSandbox
from thaw_core.tasks import Background

from thaw_agent.dispatch import Reject
from thaw_agent.manager import ContainerManager

SandboxStart = Callable[[StartSandbox], Awaitable[None]]
# A sandbox's end by id; False when there is none.
StopSandbox = Callable[[str], Awaitable[bool]]

log = logging.getLogger("thaw.agent.commands")

MAX_COMMAND_BYTES = 1024 * 1024


class CommandHandler:
    def __init__(
        self,
        manager: ContainerManager,
        reject: Reject,
        start_sandbox: SandboxStart,
        stop_sandbox: StopSandbox,
    ) -> None:
        self._m = manager
        self._start_sandbox = start_sandbox
        self._stop_sandbox = stop_sandbox
        self._reject = reject
        self._decoder = decoder(AgentCommand)
        self._running = Background(log)

    async def on_command(self, msg: Msg) -> None:
        data = msg.data
        if len(data) > MAX_COMMAND_BYTES:
            await self._refuse(msg, "too_large", f"command of {len(data)} bytes")
            return
        try:
            command = self._decoder.decode(data)
        except msgspec.DecodeError as e:
            text = str(e)
            code = "unknown" if "`$.type`" in text and "Invalid value" in text else "malformed"
            await self._refuse(msg, code, f"invalid agent command: {text}")
            return
        self._running.spawn(self._execute(command, msg), f"command:{type(command).__name__}")

    async def _refuse(self, msg: Msg, code: str, error: str) -> None:
        await self._reject(msg.subject, msg.data, code, error)
        await _reply(msg, CommandReply(ok=False, error=error))

    async def _execute(
        self, command: StartContainer | StopContainer | StartSandbox, msg: Msg
    ) -> None:
        try:
            match command:
                case StartContainer():
                    await self._m.start(command)
                case StartSandbox():
                    await self._start_sandbox(command)
                case StopContainer(container_id=cid, grace_s=grace, reason=reason):
                    stopped = await self._m.stop(cid, grace, reason)
                    if not stopped and not await self._stop_sandbox(cid):
                        log.info("stop of an unknown container", extra={"container_id": cid})
            reply = CommandReply(ok=True)
        except asyncio.CancelledError:
            await _reply(msg, CommandReply(ok=False, error="the agent is stopping"))
            raise
        except Exception as e:  # noqa: BLE001 - any failure becomes the reply's error
            log.warning(
                "command failed",
                extra={"command": type(command).__name__, "error": f"{type(e).__name__}: {e}"},
            )
            reply = CommandReply(ok=False, error=str(e) or type(e).__name__)
        await _reply(msg, reply)

    async def close(self, timeout_s: float) -> None:
        """Let running commands finish for ``timeout_s``; the rest are cancelled
        (and reply that the agent is stopping)."""
        await self._running.close(timeout_s, cancel_wait_s=1.0)


async def _reply(msg: Msg, reply: CommandReply) -> None:
    if not msg.reply:
        return
    try:
        await msg.respond(encode(reply))
    except Exception as e:  # noqa: BLE001 - a lost reply only means the requester times out
        log.warning("could not reply to a command", extra={"error": repr(e)})
