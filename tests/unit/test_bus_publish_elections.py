"""A publish while a cluster elects a stream's leader waits for the new one
(``Streams.publish``), whether or not traces are recorded: the untraced fast
path (the default) once skipped the wait and failed at once."""

from __future__ import annotations

import nats.js.errors
import pytest
from nats.js.api import PubAck
from thaw_core.bus.jetstream import Streams
from thaw_core.telemetry import recording


class ElectingJetStream:
    """Answers "no stream" for the first ``refusals`` publishes, as a
    cluster does while it elects the stream's leader."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.calls = 0

    async def publish(self, subject: str, payload: bytes, headers: object = None) -> PubAck:
        self.calls += 1
        if self.calls <= self.refusals:
            raise nats.js.errors.NoStreamResponseError()
        return PubAck(stream="INVOKE", seq=7)


def streams_electing(refusals: int) -> tuple[Streams, ElectingJetStream]:
    streams, js = Streams(), ElectingJetStream(refusals)
    streams.js = js  # type: ignore[assignment]
    return streams, js


async def test_an_untraced_publish_waits_through_a_leader_election() -> None:
    assert not recording()  # the default: no exporter configured
    streams, js = streams_electing(2)
    ack = await streams.publish("thaw.invoke.app.fn", b"input")
    assert (ack.seq, js.calls) == (7, 3)


async def test_a_publish_no_leader_answers_for_long_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("thaw_core.bus.jetstream.LEADERLESS_WAIT_S", 0.3)
    streams, js = streams_electing(1000)
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await streams.publish("thaw.invoke.app.fn", b"input")
    assert 1 < js.calls < 1000
