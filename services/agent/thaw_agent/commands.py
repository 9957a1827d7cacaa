"""Commands to this node: request/reply on ``thaw.agent.<node>``.

``StartContainer`` is answered once runc started the container (not once it
is Ready: the heartbeat says that), ``StopContainer`` once it is stopped. A
command that cannot be decoded is rejected (``ErrorEvent``) and answered
``CommandReply(ok=False)`` with the reason. Each command runs in its own
task, so a slow start (a bundle download) does not hold up the others.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

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

from thaw_agent.dispatch import Reject
from thaw_agent.manager import ContainerManager

log = logging.getLogger("thaw.agent.commands")

MAX_COMMAND_BYTES = 1024 * 1024


def command_subject(node_token: str) -> str:
    return f"thaw.agent.{node_token}"


class CommandHandler:
    def __init__(self, manager: ContainerManager, reject: Reject) -> None:
        self._m = manager
        self._reject = reject
        self._decoder = decoder(AgentCommand)
        self._tasks: set[asyncio.Task[Any]] = set()

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
        t = asyncio.create_task(
            self._execute(command, msg), name=f"command:{type(command).__name__}"
        )
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _refuse(self, msg: Msg, code: str, error: str) -> None:
        await self._reject(msg.subject, msg.data, code, error)
        await _reply(msg, CommandReply(ok=False, error=error))

    async def _execute(self, command: StartContainer | StopContainer, msg: Msg) -> None:
        try:
            match command:
                case StartContainer():
                    await self._m.start(command)
                case StopContainer(container_id=cid, grace_s=grace, reason=reason):
                    if not await self._m.stop(cid, grace, reason):
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
        if not self._tasks:
            return
        _, pending = await asyncio.wait(list(self._tasks), timeout=timeout_s)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1)


async def _reply(msg: Msg, reply: CommandReply) -> None:
    if not msg.reply:
        return
    try:
        await msg.respond(encode(reply))
    except Exception as e:  # noqa: BLE001 - a lost reply only means the requester times out
        log.warning("could not reply to a command", extra={"error": repr(e)})
