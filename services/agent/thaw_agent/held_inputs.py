"""The inputs this agent holds, journalled on the node's disk, so that its next
life hands them back at once instead of after the INVOKE ack wait.

An agent killed with SIGKILL leaves its inputs unacked: JetStream gives them
to someone else only when their ack wait runs out. The supervisor restarts the
agent sooner than that, and the new agent removes the old containers anyway
(``ContainerManager.recover``), so it naks what they held (``Bus.nak_delivery``)
and the inputs run again at once, here or on another node.

The journal is one line per fetched input (its delivery's reply subject),
appended as it is taken: the inputs one fetch hands over are written together
(one page-cache write, at the loop's next turn, before any of them reaches a
container; a process kill loses nothing written),
and rewritten with only the inputs still unsettled once ``compact`` finds
some settled. A reply subject that was settled just before the crash may still
be listed: naking it is harmless, the server ignores a delivery no longer
pending.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from thaw_core.bus import Bus, Msg

log = logging.getLogger("thaw.agent.dispatch")


class HeldInputs:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._held: dict[str, Msg] = {}
        self._fd: int | None = None
        # Lines taken since the last write (written at the loop's next turn).
        self._unwritten: list[bytes] = []

    def previous(self) -> list[str]:
        """The reply subjects a previous life of this agent held when it ended."""
        try:
            text = self._path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return list(dict.fromkeys(line for line in text.splitlines() if line))

    async def hand_back(self, bus: Bus) -> int:
        """Nak what the previous life held, then start this life's journal."""
        naked = 0
        for reply in self.previous():
            try:
                naked += await bus.nak_delivery(reply)
            except Exception as e:  # noqa: BLE001 - its ack wait hands it back anyway
                log.warning("could not hand back an input", extra={"error": repr(e)})
        if naked:
            log.warning("handed back inputs a previous agent held", extra={"inputs": naked})
        self._rewrite()
        return naked

    def add(self, msg: Msg) -> None:
        reply = msg.reply or ""
        if not reply or self._fd is None:
            return
        self._held[reply] = msg
        if not self._unwritten:
            asyncio.get_running_loop().call_soon(self._write)
        self._unwritten.append(reply.encode() + b"\n")

    def _write(self) -> None:
        lines, self._unwritten = self._unwritten, []
        if self._fd is None or not lines:
            return
        try:
            os.write(self._fd, b"".join(lines))
        except OSError as e:  # disk full: the ack wait still hands it back
            log.warning("could not journal a held input", extra={"error": repr(e)})

    def compact(self) -> None:
        """Forget the settled inputs; rewrite the journal when there were any."""
        settled = [r for r, m in self._held.items() if getattr(m, "is_acked", False)]
        if not settled:
            return
        for r in settled:
            del self._held[r]
        self._rewrite()

    def _rewrite(self) -> None:
        self._unwritten = []  # every held input is in the rewritten journal
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        os.write(fd, "".join(r + "\n" for r in self._held).encode())
        os.replace(tmp, self._path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd

    def close(self) -> None:
        """After a clean shutdown, which settled every input: no journal is
        left, so the next life naks nothing (a stale nak of an input that was
        redelivered meanwhile would hand it back from under its new runner)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._path.unlink(missing_ok=True)
