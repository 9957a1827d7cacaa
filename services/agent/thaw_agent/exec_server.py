"""``thaw.exec.<node>.<container id>``: operations on the processes of this node's
containers, sandboxes and functions' alike (``schema.sandboxes``).

The agent subscribes for a sandbox as it starts, and for each function
container once it is ready (``sync``, on every heartbeat), and stops when
they are gone, so a request for a container no agent runs finds no
responder. Each request runs in a task of its own: a long-polled read does
not hold up a write to the same process. Only the gateway may publish here
(``thaw_core.permissions``), having checked the caller's token.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from thaw_core import contract
from thaw_core.bus import Bus, Msg
from thaw_core.schema import encode
from thaw_core.schema.sandboxes import (
    ExecAck,
    ExecError,
    ExecOp,
    ExecOutput,
    ExecRead,
    ExecReply,
    ExecStart,
    ExecStarted,
    ExecStatus,
    ExecWait,
    ExecWrite,
    SandboxDescribe,
    SandboxSetTags,
    SandboxState,
    SandboxTerminate,
)
from thaw_core.tasks import Background

from thaw_agent import exec_group
from thaw_agent.exec_group import ProcessGroup
from thaw_agent.manager import ContainerManager
from thaw_agent.sandboxes import Sandbox, SandboxManager

log = logging.getLogger("thaw.agent.exec")

MAX_OP_BYTES = 1024 * 1024
# A long-polled read or wait answers within this (the gateway asks again).
MAX_WAIT_S = 20.0
MAX_READ_BYTES = 512 * 1024
MAX_TAGS = 64


class ExecServer:
    def __init__(self, bus: Bus, manager: ContainerManager, sandboxes: SandboxManager) -> None:
        self.bus = bus
        self.manager = manager
        self.sandboxes = sandboxes
        self._decoder = msgspec.json.Decoder(ExecOp)
        self._subs: dict[str, Any] = {}
        # Exec'd processes of function containers (a sandbox holds its own).
        self._groups: dict[str, ProcessGroup] = {}
        self._running = Background(log)

    async def open(self, container_id: str) -> None:
        if container_id in self._subs:
            return

        async def on_op(msg: Msg) -> None:
            self._running.spawn(self._answer(container_id, msg), f"exec:{container_id}")

        subject = contract.container_exec_subject(self.manager.layout.node_id, container_id)
        self._subs[container_id] = await self.bus.serve(subject, on_op)

    async def close(self, container_id: str) -> None:
        sub = self._subs.pop(container_id, None)
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as e:  # noqa: BLE001 - NATS away: the subscription dies with it
                log.debug("unsubscribe %s: %r", container_id, e)
        group = self._groups.pop(container_id, None)
        if group is not None:
            await group.close()

    async def sync(self) -> None:
        """Serve exactly the containers this node runs (sandboxes until forgotten)."""
        wanted = {cid for cid, c in self.manager.containers.items() if c.state == "ready"}
        wanted |= set(self.sandboxes.sandboxes)
        for cid in wanted - set(self._subs):
            await self.open(cid)
        for cid in set(self._subs) - wanted:
            await self.close(cid)

    async def shutdown(self) -> None:
        for cid in list(self._subs):
            await self.close(cid)
        await self._running.close(2.0, cancel_wait_s=1.0)

    # ------------------------------------------------------------ one request

    async def _answer(self, container_id: str, msg: Msg) -> None:
        if len(msg.data) > MAX_OP_BYTES:
            reply: ExecReply = ExecError(error=f"request of {len(msg.data)} bytes", code="bad_request")
        else:
            try:
                op = self._decoder.decode(msg.data)
                reply = await self.execute(container_id, op)
            except msgspec.DecodeError as e:
                reply = ExecError(error=f"invalid exec request: {e}", code="bad_request")
            except exec_group.ExecError as e:
                reply = ExecError(error=str(e), code=e.code)  # type: ignore[arg-type]
            except Exception as e:  # noqa: BLE001 - any failure becomes the reply's error
                log.warning("exec request failed", extra={"container_id": container_id, "error": repr(e)})
                reply = ExecError(error=f"{type(e).__name__}: {e}")
        if msg.reply:
            try:
                await msg.respond(encode(reply))
            except Exception as e:  # noqa: BLE001 - the requester times out and asks again
                log.debug("exec reply lost: %r", e)

    def _group(self, container_id: str) -> tuple[ProcessGroup, Sandbox | None]:
        sandbox = self.sandboxes.get(container_id)
        if sandbox is not None:
            sandbox.touch()
            return sandbox.group, sandbox
        c = self.manager.get(container_id)
        if c is None or c.state != "ready":
            raise exec_group.ExecError(f"container {container_id} is not running here", "not_found")
        group = self._groups.get(container_id)
        if group is None:
            group = ProcessGroup(container_id, self.manager.runc, c.paths.dir / "exec")
            self._groups[container_id] = group
        return group, None

    def _state(self, container_id: str, sandbox: Sandbox | None) -> SandboxState:
        node = self.manager.layout.node_id
        if sandbox is None:
            c = self.manager.get(container_id)
            app = c.app if c is not None else ""
            return SandboxState(container_id=container_id, app=app, node_id=node, sandbox=False)
        return SandboxState(
            container_id=container_id, app=sandbox.app, node_id=node, tags=dict(sandbox.tags),
            returncode=sandbox.returncode, created_at=sandbox.started_at,
            ended_by=sandbox.ended_by, end_reason=sandbox.error if sandbox.ended_by else "",
        )  # fmt: skip

    async def execute(self, container_id: str, op: ExecOp) -> ExecReply:
        group, sandbox = self._group(container_id)
        match op:
            case ExecStart():
                if sandbox is not None and not sandbox.running:
                    raise exec_group.ExecError(f"sandbox {container_id} has ended", "conflict")
                return ExecStarted(process_id=(await group.exec(op)).id)
            case ExecRead(process_id=pid, stream=stream, offset=offset, wait_s=wait_s):
                process = group.get(pid)
                data, after, eof = await process.streams[stream].read(
                    offset, min(wait_s, MAX_WAIT_S), min(op.max_bytes, MAX_READ_BYTES)
                )
                return ExecOutput(data=data, offset=after, eof=eof)
            case ExecWrite(process_id=pid, offset=offset, data=data, eof=eof):
                return ExecAck(offset=await group.get(pid).write(offset, data, eof))
            case ExecWait(process_id=pid, wait_s=wait_s):
                return ExecStatus(returncode=await group.get(pid).wait(min(wait_s, MAX_WAIT_S)))
            case SandboxTerminate(process_id=pid) if pid:
                process = group.get(pid)
                process.kill()
                return ExecStatus(returncode=await process.wait(5.0))
            case SandboxTerminate():
                if sandbox is None:
                    raise exec_group.ExecError("only a sandbox is terminated this way; "
                                               "`thaw container stop` stops a function's container")
                await sandbox.terminate()
                return ExecStatus(returncode=sandbox.returncode)
            case SandboxSetTags(tags=tags):
                if sandbox is None:
                    raise exec_group.ExecError("only a sandbox has tags")
                if len(tags) > MAX_TAGS:
                    raise exec_group.ExecError(f"at most {MAX_TAGS} tags")
                sandbox.tags = dict(tags)
                return self._state(container_id, sandbox)
            case SandboxDescribe():
                return self._state(container_id, sandbox)
