"""Large arguments and results between the blob store and a container.

An input whose arguments were kept in the blob store (``Invoke.args_ref``)
gets them inline in its ``RunInput`` when they fit a frame, else as a file
beside the container's socket, streamed from the blob store. A result over
``Settings.payload_inline_bytes`` is stored (from its frame, or streamed from
the file the runtime wrote) and its ``Result`` names it (``value_ref``).

The run dir is writable by the container, so every file here is opened
relative to the agent's own descriptor of it, never following a link, and
an arguments file is created exclusively: a container cannot make the agent
read or write anything but a plain file of its own run dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from thaw_core.blob import CHUNK, BlobStore
from thaw_core.config import Settings
from thaw_core.container_protocol import FILE_PAYLOAD_BYTES, Output
from thaw_core.contract import PAYLOAD_HOUR_S, payload_key
from thaw_core.schema import Invoke, PayloadRef, Result

from thaw_agent.container import Container

_FILE_NAME = re.compile(r"^value-[A-Za-z0-9_-]{1,128}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PayloadError(Exception):
    """A payload could not be moved; the message says why, for the call's error."""


def _open_in(run_dir: Path, name: str, flags: int, mode: int = 0o600) -> int:
    dir_fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _unlink_in(run_dir: Path, name: str) -> None:
    dir_fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


class Payloads:
    def __init__(self, blob: BlobStore | None, inline_bytes: int, max_bytes: int) -> None:
        self._blob = blob
        self.inline_bytes = inline_bytes
        self.max_bytes = max_bytes

    @classmethod
    def defaults(cls, blob: BlobStore | None) -> Payloads:
        s = Settings.from_env({})
        return cls(blob, s.payload_inline_bytes, s.payload_max_bytes)

    def _store(self) -> BlobStore:
        if self._blob is None:
            raise PayloadError("this agent has no blob store for large payloads")
        return self._blob

    # ------------------------------------------------------------ arguments

    async def args_for(
        self, invoke: Invoke, container: Container, input_id: str
    ) -> tuple[bytes, str]:
        """The input's arguments for its RunInput: (inline bytes, file name)."""
        ref = invoke.args_ref
        if ref is None:
            return invoke.args, ""
        key = payload_key(ref.hour, ref.sha256)
        try:
            if ref.size <= FILE_PAYLOAD_BYTES:
                return await self._store().get(key, sha256=ref.sha256), ""
            name = f"args-{input_id}"
            await self._write_file(key, container, name)
        except (KeyError, FileNotFoundError):
            raise PayloadError(
                f"the call's arguments ({ref.sha256}) are no longer kept (older than the"
                " results' retention)"
            ) from None
        except PayloadError:
            raise
        except Exception as e:
            raise PayloadError(f"could not fetch the call's arguments: {e}") from e
        return b"", name

    async def _write_file(self, key: str, container: Container, name: str) -> None:
        run_dir = container.paths.run
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        fd = await asyncio.to_thread(_open_in, run_dir, name, flags)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in self._store().stream(key):
                    await asyncio.to_thread(out.write, chunk)
                # The container's user, as the host numbers it (its user namespace).
                owner = container.ids.host_user(container.user)
                os.fchown(out.fileno(), owner.uid, owner.gid)
        except BaseException:
            await asyncio.to_thread(_unlink_in, run_dir, name)
            raise

    def discard_args(self, container: Container, name: str) -> None:
        """An arguments file the runtime did not take (the input never ran)."""
        if name:
            with contextlib.suppress(OSError):
                _unlink_in(container.paths.run, name)

    # ------------------------------------------------------------ results

    async def offloaded(self, result: Result, output: Output, container: Container) -> Result:
        """``result`` with a large value stored and named rather than inline."""
        if output.value_file:
            return await self._from_file(result, output, container)
        if len(result.value) <= self.inline_bytes:
            return result
        if len(result.value) > self.max_bytes:
            return self._too_large(result, len(result.value))
        hour = int(time.time() // PAYLOAD_HOUR_S)
        sha = hashlib.sha256(result.value).hexdigest()
        await self._store().put(payload_key(hour, sha), result.value, sha256=sha)
        ref = PayloadRef(sha256=sha, size=len(result.value), hour=hour)
        return msgspec.structs.replace(result, value=b"", value_ref=ref)

    async def _from_file(self, result: Result, output: Output, container: Container) -> Result:
        name, sha = output.value_file, output.value_sha256
        run_dir = container.paths.run
        if not _FILE_NAME.match(name) or not _SHA256.match(sha):
            return _failed(result, f"the runtime named a bad value file {name[:80]!r}")
        try:
            fd = await asyncio.to_thread(_open_in, run_dir, name, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            return _failed(result, f"the value file {name!r} cannot be read: {e.strerror}")
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return _failed(result, f"the value file {name!r} is not a plain file")
            if st.st_size > self.max_bytes:
                return self._too_large(result, st.st_size)
            hour = int(time.time() // PAYLOAD_HOUR_S)
            try:
                info = await self._store().put(payload_key(hour, sha), _chunks(f), sha256=sha)
            except Exception as e:  # noqa: BLE001 - a mismatch, a full disk: the call fails
                return _failed(result, f"could not store the result: {e}")
            finally:
                await asyncio.to_thread(_unlink_in, run_dir, name)
        ref = PayloadRef(sha256=sha, size=info.size, hour=hour)
        return msgspec.structs.replace(result, value=b"", value_ref=ref)

    def _too_large(self, result: Result, size: int) -> Result:
        return _failed(
            result,
            f"the result is {size} bytes, over the limit of {self.max_bytes}"
            " (THAW_PAYLOAD_MAX_BYTES)",
        )


def _failed(result: Result, error: str) -> Result:
    return msgspec.structs.replace(result, status="failure", value=b"", value_ref=None, error=error)


async def _chunks(f: object) -> AsyncIterator[bytes]:
    read = f.read  # type: ignore[attr-defined]
    while chunk := await asyncio.to_thread(read, CHUNK):
        yield chunk
