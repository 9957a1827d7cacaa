"""A process in a container (``Sandbox.exec``, a sandbox's own command,
``thaw container exec``): its streams and exit code.

Every operation is one ``POST /v1/containers/<id>/exec`` (``schema.sandboxes``):
output is read from an offset (long-polled, so reading waits for output
without asking in a loop), input written from an offset (a request asked
again never writes twice). Every method has an ``.aio`` form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from thaw_core.schema.sandboxes import (
    ExecAck,
    ExecOp,
    ExecOutput,
    ExecRead,
    ExecReply,
    ExecStatus,
    ExecStream,
    ExecWait,
    ExecWrite,
    SandboxTerminate,
)

from thaw import exception
from thaw._sync import aio_method, background_loop

# One long-polled read or wait lasts at most this long; then it is asked again.
POLL_S = 15.0
T = TypeVar("T", str, bytes)


async def container_op(container_id: str, op: ExecOp) -> ExecReply:
    """``op`` carried out by the agent running the container."""
    from thaw._env import is_local
    from thaw.client import current

    if not is_local():
        raise exception.InvalidError(
            "sandboxes and container processes are reached from outside thaw's containers"
            " only (not served from inside a function yet)"
        )
    path = f"/v1/containers/{quote(container_id, safe='')}/exec"
    return await current().json_request("POST", path, ExecReply, "an exec answer", body=op)  # type: ignore[arg-type]


def _expect(reply: ExecReply, kind: type[Any]) -> Any:
    if not isinstance(reply, kind):
        raise exception.ServiceError(f"the agent answered {type(reply).__name__}, not {kind.__name__}")
    return reply


class StreamReader(Generic[T]):
    """A process's stdout or stderr: ``read()`` all of it, ``readline()``, or
    iterate over its lines as they come (text, or bytes with ``text=False``)."""

    def __init__(self, container_id: str, process_id: str, stream: ExecStream, text: bool) -> None:
        self._where = (container_id, process_id)
        self._stream: ExecStream = stream
        self._text = text
        self._offset = 0
        self._pending = b""
        self._eof = False

    def _out(self, data: bytes) -> Any:
        return data.decode(errors="replace") if self._text else data

    async def _fetch(self) -> None:
        cid, pid = self._where
        op = ExecRead(process_id=pid, stream=self._stream, offset=self._offset, wait_s=POLL_S)
        out: ExecOutput = _expect(await container_op(cid, op), ExecOutput)
        self._pending += out.data
        self._offset = out.offset
        self._eof = out.eof

    @aio_method
    async def read(self) -> T:
        """Everything until the stream ends (the process exits or closes it)."""
        while not self._eof:
            await self._fetch()
        data, self._pending = self._pending, b""
        return self._out(data)  # type: ignore[no-any-return]

    @aio_method
    async def readline(self) -> T:
        """The next line, with its newline; what is left at the end; "" once ended."""
        while b"\n" not in self._pending and not self._eof:
            await self._fetch()
        line, nl, rest = self._pending.partition(b"\n")
        self._pending = rest
        return self._out(line + nl)  # type: ignore[no-any-return]

    async def chunks(self) -> AsyncIterator[bytes]:
        """The output as it comes, in whatever pieces it comes (a prompt
        without its newline too), as bytes."""
        while True:
            while not self._pending and not self._eof:
                await self._fetch()
            if not self._pending:
                return
            data, self._pending = self._pending, b""
            yield data

    async def _lines(self) -> AsyncIterator[T]:
        while line := await self.readline.aio():
            yield line

    def __iter__(self) -> Iterator[T]:
        return background_loop().iterate(self._lines())

    def __aiter__(self) -> AsyncIterator[T]:
        return self._lines()


class StreamWriter:
    """A process's stdin: ``write`` buffers, ``drain`` sends what was
    written (and the end of input after ``write_eof``)."""

    def __init__(self, container_id: str, process_id: str) -> None:
        self._where = (container_id, process_id)
        self._buffer = b""
        self._sent = 0
        self._eof = False

    def write(self, data: bytes | bytearray | memoryview | str) -> None:
        if self._eof:
            raise exception.InvalidError("stdin was closed with write_eof()")
        self._buffer += data.encode() if isinstance(data, str) else bytes(data)

    def write_eof(self) -> None:
        self._eof = True

    @aio_method
    async def drain(self) -> None:
        cid, pid = self._where
        while True:
            op = ExecWrite(process_id=pid, offset=self._sent, data=self._buffer, eof=self._eof)
            ack: ExecAck = _expect(await container_op(cid, op), ExecAck)
            taken = ack.offset - self._sent
            self._buffer = self._buffer[max(0, taken) :]
            self._sent = ack.offset
            if not self._buffer:
                return


class ContainerProcess(Generic[T]):
    """One process: ``stdin``, ``stdout``, ``stderr``, ``wait()``, ``poll()``."""

    def __init__(self, container_id: str, process_id: str, *, text: bool = True) -> None:
        self.container_id = container_id
        self.process_id = process_id
        self.stdin = StreamWriter(container_id, process_id)
        self.stdout: StreamReader[T] = StreamReader(container_id, process_id, "stdout", text)
        self.stderr: StreamReader[T] = StreamReader(container_id, process_id, "stderr", text)
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        """The exit code, once ``wait()`` or ``poll()`` saw it; None before."""
        return self._returncode

    async def _status(self, wait_s: float) -> int | None:
        op = ExecWait(process_id=self.process_id, wait_s=wait_s)
        status: ExecStatus = _expect(await container_op(self.container_id, op), ExecStatus)
        if status.returncode is not None:
            self._returncode = status.returncode
        return status.returncode

    @aio_method
    async def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return await self._status(0.0)

    @aio_method
    async def wait(self) -> int:
        """Until it exits; its exit code."""
        while (code := await self._status(POLL_S)) is None:
            pass
        return code

    @aio_method
    async def kill(self) -> int | None:
        op = SandboxTerminate(process_id=self.process_id)
        status: ExecStatus = _expect(await container_op(self.container_id, op), ExecStatus)
        self._returncode = status.returncode
        return status.returncode

    def __repr__(self) -> str:
        return f"ContainerProcess({self.container_id}/{self.process_id})"
