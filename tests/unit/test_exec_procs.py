"""A container process's streams as the agent keeps them: output read by
offset (a read asked again gets the same bytes, a read further on forgets
what came before), input taken by offset (a write sent twice is written
once), the end of a stream told after its last byte. ``cat`` and ``sh``
stand in for ``runc exec``."""

from __future__ import annotations

import asyncio

from thaw_agent.exec_procs import ContainerProcess, OutputBuffer


async def test_a_write_sent_again_is_written_once_and_read_back_in_order() -> None:
    p = await ContainerProcess.spawn("pr-1", ["cat"])
    assert await p.write(0, b"hello ", False) == 6
    assert await p.write(0, b"hello ", False) == 6  # the same request again: skipped
    assert await p.write(3, b"lo world", False) == 11  # overlapping: only the new part
    assert await p.write(20, b"gap", False) == 11  # beyond what was taken: refused
    assert await p.write(11, b"", True) == 11
    out = p.streams["stdout"]
    got, offset = b"", 0
    while True:
        data, offset, eof = await out.read(offset, 5.0, 4)
        got += data
        if eof:
            break
    assert got == b"hello world"
    assert await p.wait(5.0) == 0


async def test_a_read_asked_again_gets_the_same_bytes() -> None:
    p = await ContainerProcess.spawn("pr-2", ["sh", "-c", "printf abcdef; printf err >&2; exit 4"])
    assert await p.wait(5.0) == 4
    out = p.streams["stdout"]
    first = await out.read(0, 0, 3)
    assert first == (b"abc", 3, False)
    assert await out.read(0, 0, 3) == first  # the reply was lost: asked again
    assert await out.read(3, 0, 10) == (b"def", 6, True)
    assert await p.streams["stderr"].read(0, 0, 10) == (b"err", 3, True)


async def test_a_read_waits_for_output_and_a_full_buffer_holds_the_writer() -> None:
    buf = OutputBuffer()
    waiting = asyncio.create_task(buf.read(0, 5.0, 10))
    await asyncio.sleep(0)
    buf.append(b"x")
    assert await waiting == (b"x", 1, False)
    buf.append(b"y" * (8 * 1024 * 1024))
    assert not buf.room.is_set()  # its pump stops reading the pipe
    await buf.read(1 + 8 * 1024 * 1024, 0, 1)  # all of it read: room again
    assert buf.room.is_set()
    buf.close()
    assert await buf.read(1 + 8 * 1024 * 1024, 1.0, 10) == (b"", 1 + 8 * 1024 * 1024, True)


async def test_kill_ends_a_process_that_ignores_its_input() -> None:
    p = await ContainerProcess.spawn("pr-3", ["sleep", "60"])
    p.kill()
    assert await p.wait(5.0) is not None
    await p.close()
