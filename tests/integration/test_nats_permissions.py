"""NATS trusts nobody: against the session's real nats-server (configured as
`thaw up` configures its own), a connection without a credential is refused,
an invoke client may publish invokes for its apps and read its own results and
nothing else, and an agent cannot touch the streams' configuration."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest
from fixtures.nats import NatsServer, invoke_client, node_creds, role_creds, session_auth
from fixtures.wait import eventually
from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, StreamConfig
from thaw_core import contract, permissions
from thaw_core.bus import Bus, Msg
from thaw_core.nats_auth import (
    Credential,
    connect_options,
    new_seed,
    read_credential,
)
from thaw_core.private_file import write_private

# A refused request gets no reply: the server drops it and says why on the connection.
REFUSED_S = 2


class Conn:
    """A raw nats-py connection that records the server's refusals."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc = Client()

    async def on_error(self, e: Exception) -> None:
        self.errors.append(str(e))

    async def connect(self, url: str, creds: Path) -> Conn:
        await self.nc.connect(
            url, error_cb=self.on_error, allow_reconnect=False, **connect_options(creds)
        )
        return self

    def refused(self, what: str) -> bool:
        return any(
            "permissions violation" in e.lower() and what.lower() in e.lower() for e in self.errors
        )


@pytest.fixture
async def app_and_clients(
    nats_server: NatsServer, tmp_path: Path
) -> AsyncIterator[tuple[str, Conn, Conn, str, str]]:
    """An app, and two invoke clients of it connected: (app, a, b, a's call-id prefix, b's)."""
    app = f"perm-{uuid.uuid4().hex[:8]}"
    a_creds = await invoke_client(nats_server.url, [app], tmp_path)
    b_creds = await invoke_client(nats_server.url, [app], tmp_path)
    a = await Conn().connect(nats_server.url, a_creds)
    b = await Conn().connect(nats_server.url, b_creds)
    try:
        yield (
            app,
            a,
            b,
            read_credential(a_creds).call_id_prefix,
            read_credential(b_creds).call_id_prefix,
        )
    finally:
        await a.nc.close()
        await b.nc.close()


async def test_a_connection_without_credentials_is_refused(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(nats_server.url, allow_reconnect=False, max_reconnect_attempts=0)
    # A well-formed credential the server was never told about.
    stranger = tmp_path / "stranger.json"
    cred = Credential(user="agent", seed=new_seed(), inbox_prefix=contract.inbox_prefix("agent"))
    write_private(stranger, msgspec.json.encode(cred).decode())
    with pytest.raises(TimeoutError, match="Authorization Violation"):
        await Bus.connect(nats_server.url, name="stranger", creds=stranger, connect_timeout_s=2)


async def test_an_invoke_client_publishes_invokes_for_its_apps_only(
    app_and_clients: tuple[str, Conn, Conn, str, str], bus: Bus
) -> None:
    app, a, _, _, _ = app_and_clients
    js = a.nc.jetstream()
    ack = await js.publish(contract.invoke_subject(app, "f"), b"{}")
    assert ack.stream == contract.INVOKE_STREAM.name

    other = contract.invoke_subject(f"not-{app}", "f")
    with pytest.raises(nats.errors.TimeoutError):
        await js.publish(other, b"{}", timeout=REFUSED_S)
    assert a.refused(other), a.errors
    assert await bus.stored_count(other) == 0


async def test_an_invoke_client_cannot_publish_a_result(
    app_and_clients: tuple[str, Conn, Conn, str, str], bus: Bus
) -> None:
    _, a, _, a_prefix, _ = app_and_clients
    for call_id in (f"{a_prefix}x1", f"fc-{uuid.uuid4().hex}"):
        subject = contract.result_subject(call_id)
        with pytest.raises(nats.errors.TimeoutError):
            await a.nc.jetstream().publish(subject, b"{}", timeout=REFUSED_S)
        assert a.refused(subject), a.errors
        assert await bus.last(subject) is None


async def test_an_invoke_client_reads_only_its_own_results(
    app_and_clients: tuple[str, Conn, Conn, str, str], bus: Bus
) -> None:
    _, a, _, a_prefix, b_prefix = app_and_clients
    mine = await a.nc.subscribe(contract.result_subject(f"{a_prefix}*"))
    await a.nc.flush()
    # Another client's results, every result, and the gateway's own calls.
    for subject in (
        contract.result_subject(f"{b_prefix}*"),
        contract.all_of(contract.RESULT),
        contract.result_subject("fc-123"),
    ):
        await a.nc.subscribe(subject)
        await a.nc.flush()
        await eventually(lambda s=subject: a.refused(s), what=f"{subject} refused")

    await bus.publish(contract.result_subject(f"{b_prefix}call"), b"b's")
    await bus.publish(contract.result_subject(f"{a_prefix}call"), b"a's")
    msg = await mine.next_msg(timeout=10)
    assert msg.data == b"a's"
    # b's result never reached a: the refused subscriptions got nothing.
    with pytest.raises(nats.errors.TimeoutError):
        await mine.next_msg(timeout=0.5)


async def test_an_invoke_client_has_no_jetstream_api(
    app_and_clients: tuple[str, Conn, Conn, str, str],
) -> None:
    _, a, _, _, _ = app_and_clients
    js = a.nc.jetstream(timeout=REFUSED_S)
    name = contract.INVOKE_STREAM.name
    attempts = {
        "STREAM.PURGE": js.purge_stream(name),
        "STREAM.DELETE": js.delete_stream(name),
        "STREAM.UPDATE": js.update_stream(StreamConfig(name=name, subjects=["x.>"])),
        "STREAM.INFO": js.stream_info(name),
        "CONSUMER": js.add_consumer(name, ConsumerConfig(durable_name="spy")),
        "STREAM.MSG.GET": js.get_last_msg(contract.RESULTS_STREAM.name, "thaw.result.x"),
    }
    for op, attempt in attempts.items():
        with pytest.raises(nats.errors.TimeoutError):
            await attempt
        assert a.refused(f"$JS.API.{op}"), (op, a.errors)


async def test_an_agent_cannot_purge_delete_or_reconfigure_streams(
    nats_server: NatsServer, bus: Bus
) -> None:
    node = f"node-{uuid.uuid4().hex[:8]}"
    agent = await Conn().connect(
        nats_server.url, Path(await asyncio.to_thread(node_creds, node, nats_server.url))
    )
    try:
        js = agent.nc.jetstream(timeout=REFUSED_S)
        for stream in contract.STREAMS:
            for op, attempt in (
                ("STREAM.PURGE", js.purge_stream(stream.name)),
                ("STREAM.DELETE", js.delete_stream(stream.name)),
                (
                    "STREAM.UPDATE",
                    js.update_stream(StreamConfig(name=stream.name, subjects=["x.>"])),
                ),
            ):
                with pytest.raises(nats.errors.TimeoutError):
                    await attempt
                assert agent.refused(f"$JS.API.{op}.{stream.name}"), (op, agent.errors)
        # What it needs still works: an INVOKE consumer of a function.
        spec = contract.invoke_consumer(f"perm-{uuid.uuid4().hex[:8]}", "f")
        await js.add_consumer(spec.stream, ConsumerConfig(durable_name=spec.durable,
                                                          filter_subject=spec.filter_subject))  # fmt: skip
        # ... but not a consumer of another stream.
        with pytest.raises(nats.errors.TimeoutError):
            await js.add_consumer(contract.RESULTS_STREAM.name, ConsumerConfig(durable_name="spy"))
    finally:
        await agent.nc.close()
    # Nothing was purged from under the platform.
    assert (await bus.js.stream_info(contract.INVOKE_STREAM.name)).config.subjects == list(
        contract.INVOKE_STREAM.subjects
    )


async def arrives(sub: Subscription, bus: Bus, subject: str, data: bytes) -> None:
    """``data`` published on ``subject`` reaches ``sub``: sent again until it
    does. Core NATS is at most once, and in about one run in six under load
    the first message right after a subscription made in this test (its
    connection flushed) never came, while the next one did."""
    for _ in range(10):
        await bus.publish_core(subject, data)
        try:
            got = await sub.next_msg(timeout=2)
        except nats.errors.TimeoutError:
            continue
        assert got.data == data
        return
    raise AssertionError(f"nothing published on {subject} reached its subscriber")


async def test_a_node_cannot_read_or_speak_for_another_node(
    nats_server: NatsServer, bus: Bus
) -> None:
    """Each node's agent has a NATS user of its own: node A cannot read node
    B's replies (secrets among them) or commands, nor send B's heartbeats."""
    a_id, b_id = (f"node-{uuid.uuid4().hex[:8]}" for _ in range(2))
    a_creds, b_creds = [
        Path(await asyncio.to_thread(node_creds, n, nats_server.url)) for n in (a_id, b_id)
    ]
    assert read_credential(a_creds).inbox_prefix != read_credential(b_creds).inbox_prefix
    a = await Conn().connect(nats_server.url, a_creds)
    b = await Bus.connect(nats_server.url, name="agent", creds=b_creds)
    spies = []
    try:
        for subject in (
            contract.agent_inbox_prefix(b_id) + ".>",
            contract.inbox_prefix(permissions.AGENT) + ".>",
            contract.agent_command_subject(b_id),
            # Serving B's containers' processes would read what the gateway
            # asks of them (a command's stdin, a sandbox's output offsets).
            contract.container_exec_subject(b_id, "sb-0123"),
            contract.wildcard(contract.CONTAINER_EXEC),
        ):
            spies.append(await a.nc.subscribe(subject))
            await a.nc.flush()
            await eventually(lambda s=subject: a.refused(s), what=f"{subject} refused")
        heartbeat = contract.node_event_subject(b_id)
        await a.nc.publish(heartbeat, b"{}")
        await a.nc.flush()
        await eventually(lambda: a.refused(heartbeat), what="B's heartbeat refused to A")

        # B asks for secrets; the answer reaches B and no spy of A's.
        async def answer(msg: Msg) -> None:
            await msg.respond(b"s3cret")

        served = await bus.subscribe(contract.SECRETS_FETCH, answer)
        try:
            assert (await b.request(contract.SECRETS_FETCH, b"{}", timeout_s=30)).data
        finally:
            await served.unsubscribe()
        for spy in spies:
            with pytest.raises(nats.errors.TimeoutError):
                await spy.next_msg(timeout=0.5)
        # What A needs for itself still works: its commands, its heartbeats,
        # its containers' processes.
        own = await a.nc.subscribe(contract.agent_command_subject(a_id))
        own_exec = await a.nc.subscribe(contract.container_exec_subject(a_id, "sb-0123"))
        await a.nc.publish(contract.node_event_subject(a_id), b"{}")
        await a.nc.flush()
        await arrives(own, bus, contract.agent_command_subject(a_id), b"drain")
        await arrives(own_exec, bus, contract.container_exec_subject(a_id, "sb-0123"), b"op")
        assert not a.refused(contract.node_event_subject(a_id)), a.errors
    finally:
        await a.nc.close()
        await b.close(grace_s=1)


async def test_the_gateway_cannot_destroy_streams_or_speak_for_a_node(
    nats_server: NatsServer, bus: Bus
) -> None:
    gw = await Conn().connect(nats_server.url, Path(role_creds(permissions.GATEWAY)))
    try:
        js = gw.nc.jetstream(timeout=REFUSED_S)
        for op, attempt in (
            ("STREAM.DELETE", js.delete_stream(contract.INVOKE_STREAM.name)),
            ("STREAM.PURGE", js.purge_stream(contract.RESULTS_STREAM.name)),
        ):
            with pytest.raises(nats.errors.TimeoutError):
                await attempt
            assert gw.refused(f"$JS.API.{op}"), (op, gw.errors)
        heartbeat = contract.node_event_subject(f"node-{uuid.uuid4().hex[:8]}")
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(heartbeat, b"{}", timeout=REFUSED_S)
        assert gw.refused(heartbeat), gw.errors
        assert await bus.stored_count(heartbeat) == 0
        # What it does still works: the streams' info, a Dict's bucket.
        assert (await js.stream_info(contract.INVOKE_STREAM.name)).config.name
    finally:
        await gw.nc.close()
    assert (await bus.js.stream_info(contract.INVOKE_STREAM.name)).config.subjects == list(
        contract.INVOKE_STREAM.subjects
    )


async def test_a_revoked_client_is_disconnected_and_refused(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    creds = await invoke_client(nats_server.url, [f"perm-{uuid.uuid4().hex[:8]}"], tmp_path)
    conn = await Conn().connect(nats_server.url, creds)
    auth = session_auth()
    assert auth.remove_client(read_credential(creds).user)
    assert auth.reload_servers() >= 1
    await eventually(lambda: conn.nc.is_closed, what="the revoked client's connection closed")
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            nats_server.url, allow_reconnect=False, max_reconnect_attempts=0,
            **connect_options(creds),
        )  # fmt: skip


async def test_a_reply_owed_across_a_reload_still_arrives(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """nats-server forgets the replies a user owes when it reloads (as a new
    invoke client makes it do): an agent still answers a command that came
    from the scheduler before the reload."""
    node = f"node-{uuid.uuid4().hex[:8]}"
    creds = Path(await asyncio.to_thread(node_creds, node, nats_server.url))
    agent = await Bus.connect(nats_server.url, name="agent", creds=creds)
    scheduler = await Bus.connect(
        nats_server.url, name="scheduler", creds=Path(role_creds("scheduler"))
    )
    subject = contract.agent_command_subject(node)
    got: list[Msg] = []
    try:
        await agent.subscribe(subject, functools.partial(_append, got))
        asking = asyncio.create_task(scheduler.request(subject, b"start", timeout_s=30))
        await eventually(lambda: got, what="the command received")
        await invoke_client(nats_server.url, ["reload-app"], tmp_path)  # reloads the server
        await got[0].respond(b"started")
        assert (await asking).data == b"started"
    finally:
        await agent.close(grace_s=1)
        await scheduler.close(grace_s=1)


async def _append(into: list[Msg], msg: Msg) -> None:
    into.append(msg)
