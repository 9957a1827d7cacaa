"""The supervisor's start-up steps on a connection of their own (streams,
migrations): a failure to connect or to act stops the start with
``StartupFailed`` saying which, and the connection is closed either way."""

from __future__ import annotations

import pytest
from thaw.stack.supervisor import StartupFailed, _connected_do


class Conn:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def connected(conn: Conn) -> Conn:
    return conn


async def refused() -> Conn:
    raise OSError("connection refused")


async def test_a_step_that_cannot_connect_says_so() -> None:
    with pytest.raises(StartupFailed, match="cannot connect to Postgres to migrate: connection refused"):
        await _connected_do(
            refused(), lambda c: c.close(), lambda c: c.close(),
            connecting="Postgres to migrate", failed="database migration failed",
        )  # fmt: skip


async def test_a_step_that_fails_says_so_and_closes_its_connection() -> None:
    conn = Conn()

    async def act(c: Conn) -> None:
        raise RuntimeError("relation exists")

    with pytest.raises(StartupFailed, match="database migration failed: relation exists"):
        await _connected_do(
            connected(conn), act, Conn.close,
            connecting="Postgres to migrate", failed="database migration failed",
        )  # fmt: skip
    assert conn.closed


async def test_a_step_that_works_closes_its_connection() -> None:
    conn, acted = Conn(), []

    async def act(c: Conn) -> None:
        acted.append(c)

    await _connected_do(connected(conn), act, Conn.close, connecting="x", failed="y")
    assert acted == [conn] and conn.closed
