"""The SDK across a lost gateway, against the fake gateway behind a
connection that breaks: requests refused, answers lost after the gateway
took the request, result streams cut in the middle, call records lost.
Every call is taken once and every result comes once, in order; past the
reconnect window the SDK gives up saying so. (On the real stack, with the
gateway killed: tests/e2e/test_gateway_restart.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
import thaw
import thaw._reconnect
from fixtures.fake_gateway import FakeGateway
from thaw.client import use_transport
from thaw.exception import ConnectionError
from thaw.progress import reconnect_note
from thaw_core.api import BatchAccepted

app = thaw.App("reconnect")


@app.function()
def square(x: int) -> int:
    return x * x


def broken() -> ConnectionError:
    return ConnectionError("cannot reach the thaw gateway (connection refused)")


class Flaky:
    """The fake gateway behind a breaking connection. ``refuse``: requests
    refused before they reach it; ``lose``: requests it takes whose answer is
    lost; ``cut``: streams broken after ``cut_after`` lines; ``bus_silent``:
    POSTs answered 504 because the gateway's bus did not answer (a NATS
    server lost, its streams electing a leader)."""

    def __init__(self, fake: FakeGateway) -> None:
        self.fake = fake
        self.refuse = self.lose = self.cut = self.bus_silent = 0
        self.cut_after = 10
        self.on_batch: Callable[[BatchAccepted], None] | None = None
        self.lost_seen: list[float | None] = []
        self.notes: list[str] = []

    def _refused(self) -> bool:
        if self.refuse:
            self.refuse -= 1
            self.lost_seen.append(thaw._reconnect.lost_for())
            self.notes.append(str(reconnect_note()))
            return True
        return False

    async def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        if self._refused():
            raise broken()
        if self.bus_silent and method == "POST":
            self.bus_silent -= 1
            error = {"error": {"code": "timeout", "message": "the bus did not answer"}}
            return 504, msgspec.json.encode(error)
        status, answer = await self.fake.request(method, path, body, content_type)
        if path.endswith(":batch") and self.on_batch is not None:
            self.on_batch(msgspec.json.decode(answer, type=BatchAccepted))
        if self.lose and method == "POST":
            self.lose -= 1
            raise broken()
        return status, answer

    async def lines(
        self, method: str, path: str, body: bytes | None = None
    ) -> AsyncIterator[bytes]:
        if self._refused():
            raise broken()
        cut = self.cut > 0
        self.cut -= cut
        n = 0
        async for line in self.fake.lines(method, path, body):
            if cut and n == self.cut_after:
                raise broken()
            n += 1
            yield line

    async def close(self) -> None:
        pass


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Flaky:
    monkeypatch.setattr(thaw._reconnect, "FIRST_DELAY_S", 0.01)
    fake = FakeGateway()
    fake.serve("reconnect", square)
    flaky = Flaky(fake)
    with use_transport(flaky):  # type: ignore[arg-type]
        yield flaky


def taken_once(fake: FakeGateway) -> None:
    assert fake.taken and set(fake.taken.values()) == {1}, fake.taken.most_common(3)


def test_remote_whose_answer_is_lost_is_made_once(flaky: Flaky) -> None:
    flaky.refuse, flaky.lose = 2, 2
    assert square.remote(7) == 49
    taken_once(flaky.fake)
    assert [c.resend for c in flaky.fake.calls] == [True, True, True]
    assert len({c.request_key for c in flaky.fake.calls}) == 1
    # While it was away the progress bar said so; now it does not.
    assert flaky.lost_seen[0] is None and flaky.lost_seen[1] is not None
    assert flaky.notes[0] == "" and "reconnecting to the gateway" in flaky.notes[1]
    assert thaw._reconnect.lost_for() is None and not str(reconnect_note())


def test_map_survives_lost_batches_and_cut_streams(flaky: Flaky) -> None:
    n = 500
    flaky.lose, flaky.cut, flaky.refuse = 3, 6, 4
    assert list(square.map(range(n))) == [i * i for i in range(n)]
    taken_once(flaky.fake)
    assert len(flaky.fake.taken) == n
    assert flaky.lose == flaky.cut == flaky.refuse == 0  # each fault was met


def test_map_sends_again_the_calls_whose_records_were_lost(flaky: Flaky) -> None:
    def lose_first(accepted: BatchAccepted) -> None:
        flaky.on_batch = None
        flaky.fake.lose_records(accepted.call_ids)

    flaky.on_batch = lose_first
    assert list(square.map(range(100))) == [i * i for i in range(100)]
    taken_once(flaky.fake)
    assert any(b.resend for b in flaky.fake.batches)


def test_a_bus_that_did_not_answer_is_ridden_out_by_calls_and_maps(flaky: Flaky) -> None:
    flaky.bus_silent = 2
    assert square.remote(3) == 9
    flaky.bus_silent = 3
    assert list(square.map(range(200))) == [i * i for i in range(200)]
    taken_once(flaky.fake)
    assert flaky.bus_silent == 0


def test_spawn_and_get_across_an_outage(flaky: Flaky) -> None:
    flaky.lose = 1
    call = square.spawn(9)
    flaky.refuse = 3
    assert call.get() == 81
    taken_once(flaky.fake)


def test_spawn_then_get_of_a_call_whose_record_was_lost(flaky: Flaky) -> None:
    call = square.spawn(5)
    flaky.fake.lose_records([call.object_id])
    assert call.get() == 25
    taken_once(flaky.fake)


def test_it_gives_up_after_the_reconnect_window(
    flaky: Flaky, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("THAW_RECONNECT_S", "0.3")
    flaky.refuse = 10**9
    with pytest.raises(ConnectionError, match=r"reconnect window \(THAW_RECONNECT_S=0.3s\)"):
        square.remote(1)
    monkeypatch.setenv("THAW_RECONNECT_S", "0")
    refused = flaky.refuse
    with pytest.raises(ConnectionError, match="connection refused"):
        list(square.map(range(3)))
    assert refused - flaky.refuse == 1  # no second try
    assert thaw._reconnect.lost_for() is None


def test_a_bad_reconnect_window_is_refused(flaky: Flaky, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THAW_RECONNECT_S", "soon")
    flaky.refuse = 1
    with pytest.raises(thaw.exception.InvalidError, match="THAW_RECONNECT_S='soon'"):
        square.remote(1)


def test_a_runs_logs_follow_on_after_a_cut_without_repeating(
    flaky: Flaky, monkeypatch: pytest.MonkeyPatch
) -> None:
    import thaw._output
    from thaw.deploy import _print_logs

    printed: list[str] = []
    monkeypatch.setattr(thaw._output, "print_log_line", lambda line: printed.append(line.line))
    flaky.cut, flaky.cut_after, flaky.refuse = 1, 2, 0
    # The first follow breaks after two lines; the second sends all three again.
    asyncio.run(_print_logs("reconnect"))
    assert printed == ["line 0", "line 1", "line 2"]
    assert thaw._reconnect.lost_for() is None  # a log follow is not shown as an outage
