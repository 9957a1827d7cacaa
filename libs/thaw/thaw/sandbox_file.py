"""``Sandbox.open``: a file in a sandbox, read or written by ``cat`` run in
it (``Sandbox.exec``), so it is reached with the sandbox's own user and
view of its filesystem, never from the host's side. Reading takes the
whole file at open; writing sends it on ``flush()``/``close()``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from thaw import exception
from thaw._sync import aio_method

if TYPE_CHECKING:
    from thaw.sandbox import Sandbox

_MODES = {"r", "rb", "w", "wb", "a", "ab", "r+", "rb+", "r+b", "w+", "wb+", "a+", "ab+"}


class SandboxFile:
    def __init__(self, sandbox: Sandbox, path: str, mode: str, data: bytes) -> None:
        self._sandbox = sandbox
        self.path = path
        self.mode = mode
        self._binary = "b" in mode
        self._data = data
        self._pos = 0
        self._dirty = mode.startswith("w")  # "w" empties the file even if nothing is written
        self.closed = False

    @classmethod
    async def open(cls, sandbox: Sandbox, path: str, mode: str) -> SandboxFile:
        if mode not in _MODES:
            raise exception.InvalidError(f"Sandbox.open: mode {mode!r} is not one of {sorted(_MODES)}")
        if not path:
            raise exception.InvalidError("Sandbox.open needs a path")
        data = b""
        if mode.startswith(("r", "a")):
            data = await cls._cat(sandbox, path, missing_ok=mode.startswith("a"))
        f = cls(sandbox, path, mode, data)
        if mode.startswith("a"):
            f._pos = len(data)
        return f

    @staticmethod
    async def _cat(sandbox: Sandbox, path: str, *, missing_ok: bool) -> bytes:
        p = await sandbox.exec.aio("cat", "--", path, text=False)
        data = await p.stdout.read.aio()
        if await p.wait.aio() != 0:
            err = (await p.stderr.read.aio()).decode(errors="replace").strip()
            if missing_ok and "No such file" in err:
                return b""
            if "No such file" in err:
                raise FileNotFoundError(f"{path} in sandbox {sandbox.object_id}: {err}")
            raise exception.ExecutionError(f"cannot read {path} in sandbox {sandbox.object_id}: {err}")
        return bytes(data)

    def _check(self, writing: bool) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed file")
        if writing and self.mode.startswith("r") and "+" not in self.mode:
            raise exception.InvalidError(f"{self.path} was opened for reading ({self.mode!r})")
        if not writing and not (self.mode.startswith("r") or "+" in self.mode):
            raise exception.InvalidError(f"{self.path} was opened for writing ({self.mode!r})")

    def _out(self, data: bytes) -> Any:
        return data if self._binary else data.decode()

    def read(self, n: int = -1) -> Any:
        self._check(writing=False)
        end = len(self._data) if n is None or n < 0 else self._pos + n
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return self._out(chunk)

    def readline(self) -> Any:
        self._check(writing=False)
        nl = self._data.find(b"\n", self._pos)
        end = len(self._data) if nl < 0 else nl + 1
        chunk = self._data[self._pos : end]
        self._pos = end
        return self._out(chunk)

    def write(self, data: bytes | str) -> int:
        self._check(writing=True)
        raw = data.encode() if isinstance(data, str) else bytes(data)
        if self.mode.startswith("a"):
            self._pos = len(self._data)
        self._data = self._data[: self._pos] + raw + self._data[self._pos + len(raw) :]
        self._pos += len(raw)
        self._dirty = True
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    @aio_method
    async def flush(self) -> None:
        if not self._dirty or self.closed:
            return
        p = await self._sandbox.exec.aio("sh", "-c", 'cat > "$1"', "sh", self.path, text=False)
        p.stdin.write(self._data)
        p.stdin.write_eof()
        await p.stdin.drain.aio()
        if await p.wait.aio() != 0:
            err = (await p.stderr.read.aio()).decode(errors="replace").strip()
            raise exception.ExecutionError(
                f"cannot write {self.path} in sandbox {self._sandbox.object_id}: {err}"
            )
        self._dirty = False

    @aio_method
    async def close(self) -> None:
        if self.closed:
            return
        await self.flush.aio()
        self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
