"""Who may publish and subscribe what on NATS: one ``Grants`` per role, built
from ``thaw_core.contract``'s names. ``thaw_core.nats_auth`` renders them into
the nats-server's ``authorization`` block, one nkey user per role (and one per
invoke client), so the server refuses everything else.

Roles: one per service (its ``Service.name``), ``admin`` (the stack's
supervisor, the CLI, tests), one per node's agent (``node_grants``: its own
inbox, commands and heartbeats) and invoke clients (``client_grants``: other
languages publishing invokes for the apps they were granted).

Every role gets its own request/reply inbox (``contract.inbox_prefix``), may
answer requests it received (``allow_responses``, and on the inboxes of the
roles that ask it, ``_answers``), serves its health subject and reports its
refusals as error events. Beyond that:

- results (``thaw.result.>``): published by agents, by the gateway for a
  call cancelled before any agent answered, and by the scheduler for an input
  no deployed function consumes (``thaw_scheduler.unanswered``, which then
  deletes it from INVOKE: ``_answers_unconsumed``); read by the gateway, agents (to
  drop a redelivered input) and each invoke client under its own prefix;
- the JetStream API: only the gateway and admin create, update, delete or
  purge streams (``may_provision``); other services get the consumer
  operations on the streams they consume (``_consumes``) and nothing else;
- a container's processes (``thaw.exec.<node>.<container>``: sandboxes,
  ``thaw container exec``): asked by the gateway alone, served by the agent of
  that node only (``node_grants``); sandboxes
  are placed by the scheduler at the gateway's request;
- Dict and Queue (their KV buckets and queue streams): the gateway alone;
  a container's operations reach it from its agent on ``STORE_REQUEST``.

Extending: a new subject is defined in ``contract.py`` and then granted here,
in the ``ROLES`` entry of each role that publishes it (``publish``) or listens
to it (``subscribe``); a role that serves a request/reply subject subscribes to
it and answers through ``allow_responses``, a role that asks publishes it. A
new stream that a service consumes gets ``_consumes(THE_STREAM)`` in that role.
A subject granted to nobody is refused by the server, which nats-py reports as
a "Permissions Violation" on the connection (and the nats-server log names the
user and subject), so a missing grant shows up at the first test that uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from thaw_core import contract as c

JS_API = "$JS.API"
# Acks, naks and in-progress of JetStream deliveries go to the message's reply
# subject: $JS.ACK.<stream>.<consumer>.<...>.
JS_ACK = "$JS.ACK"
# Flow control replies of push (ordered) consumers.
JS_FC = "$JS.FC"

ADMIN = "admin"
GATEWAY = "gateway"
AGENT = "agent"
SCHEDULER = "scheduler"
BUILDER = "builder"
SNAPSHOTS = "snapshots"
VOLUMES = "volumes"
CRON = "cron"


@dataclass(frozen=True)
class Grants:
    """What one NATS user may do: subjects (wildcards allowed) it may publish
    and subscribe to, and whether it may answer the requests it receives."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    responds: bool = True
    # Refused even where ``publish`` allows it (the server's ``deny``).
    publish_deny: tuple[str, ...] = ()

    def __add__(self, other: Grants) -> Grants:
        return Grants(
            publish=_unique(self.publish + other.publish),
            subscribe=_unique(self.subscribe + other.subscribe),
            responds=self.responds or other.responds,
            publish_deny=_unique(self.publish_deny + other.publish_deny),
        )


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _consumes(stream: c.StreamSpec) -> Grants:
    """Bind to, create or update durable pull consumers of ``stream``, fetch
    from them and settle what they deliver; read the stream's info."""
    s = stream.name
    return Grants(
        publish=(
            f"{JS_API}.STREAM.INFO.{s}",
            f"{JS_API}.CONSUMER.CREATE.{s}",
            f"{JS_API}.CONSUMER.CREATE.{s}.>",
            f"{JS_API}.CONSUMER.DURABLE.CREATE.{s}.*",
            f"{JS_API}.CONSUMER.INFO.{s}.*",
            f"{JS_API}.CONSUMER.MSG.NEXT.{s}.*",
            f"{JS_ACK}.{s}.>",
        )
    )


def _reads_last(stream: c.StreamSpec) -> Grants:
    """Read the last message stored on a subject of ``stream`` (``Bus.last``)."""
    return Grants(publish=(f"{JS_API}.STREAM.MSG.GET.{stream.name}",))


def _answers(*requesters: str) -> Grants:
    """Reply to requests from ``requesters`` (and admin's health probes) on
    their inboxes. ``allow_responses`` alone is not enough: nats-server forgets
    which replies a user owes whenever it reloads its configuration (as
    ``thaw nats-client create`` makes it do), and a reply after that is refused."""
    return Grants(publish=tuple(c.inbox_prefix(r) + ".>" for r in (ADMIN, *requesters)))


def _answers_unconsumed(stream: c.StreamSpec) -> Grants:
    """Read what ``stream`` stores on a subject nobody consumes, publish its
    answer (a Result) and delete it (``thaw_scheduler.unanswered``)."""
    return Grants(
        publish=(
            c.all_of(c.RESULT),
            f"{JS_API}.STREAM.MSG.GET.{stream.name}",
            f"{JS_API}.STREAM.MSG.DELETE.{stream.name}",
        )
    )


def _service(role: str) -> Grants:
    """What every service needs: its inbox, its health probe, its error events."""
    return (
        Grants(
            publish=(c.error_event_subject(role),),
            subscribe=(c.inbox_prefix(role) + ".>", c.health_subject(role)),
        )
        + _answers()
    )


# What the gateway never does, though its grants' wildcards would let it:
# speak for a node or the builder, destroy or empty the platform's streams
# (it deletes and purges only Dict and Queue streams, which NATS's token-level
# wildcards cannot name by their prefix), or touch the account and the
# JetStream cluster.
_GATEWAY_NEVER = Grants(
    publish_deny=(
        c.wildcard(c.EVENT_NODE),
        c.wildcard(c.BUILD_LOG),
        c.wildcard(c.BUILD_RESULT),
        *(
            f"{JS_API}.STREAM.{op}.{stream.name}"
            for stream in c.STREAMS
            for op in ("DELETE", "PURGE")
        ),
        f"{JS_API}.ACCOUNT.>",
        f"{JS_API}.META.>",
        f"{JS_API}.SERVER.>",
    )
)

ROLES: dict[str, Grants] = {
    # Everything: the supervisor provisions streams and probes health, the CLI
    # and the tests look at whatever they need.
    ADMIN: Grants(publish=(">",), subscribe=(">",)),
    # The control plane: it provisions the streams and consumers, publishes
    # inputs, cancels (and the result of a call cancelled before it ran),
    # app events and build requests, commands agents, follows logs and events,
    # serves secrets and the web requests' bodies.
    GATEWAY: Grants(
        publish=(
            f"{c.PREFIX}.>",
            f"{JS_API}.>",
            f"{JS_ACK}.>",
            f"{JS_FC}.>",
            # thaw.Dict's buckets: NATS's key-value subjects.
            c.all_of(c.KV_KEY),
        ),
        subscribe=(f"{c.PREFIX}.>",),
    )
    # Secrets for agents and builds, web requests' bodies and containers'
    # Dict/Queue operations for agents.
    + _answers(AGENT, BUILDER)
    + _GATEWAY_NEVER,
    SCHEDULER: Grants(
        publish=(c.wildcard(c.AGENT_COMMAND),),
        # Sandboxes to place, asked by the gateway; a cold function's first
        # input, which wakes it (``thaw_scheduler.first_input``).
        subscribe=(c.wildcard(c.EVENT_APP), c.SANDBOX_PLACE, c.all_of(c.INVOKE)),
    )
    + _answers(GATEWAY)
    + _consumes(c.EVENTS_STREAM)
    + _consumes(c.INVOKE_STREAM)
    + _answers_unconsumed(c.INVOKE_STREAM),
    BUILDER: Grants(
        publish=(c.wildcard(c.BUILD_LOG), c.wildcard(c.BUILD_RESULT), c.SECRETS_FETCH),
        subscribe=(c.IMAGE_LOOKUP,),
    )
    + _answers(AGENT, GATEWAY)
    + _consumes(c.BUILD_STREAM),
    SNAPSHOTS: Grants(subscribe=(c.SNAPSHOT_LOOKUP,))
    + _answers(AGENT, GATEWAY)
    + _consumes(c.EVENTS_STREAM),
    VOLUMES: Grants(
        subscribe=(
            c.VOLUMES_ENSURE,
            c.VOLUMES_DELETE,
            c.VOLUMES_LIST,
            c.VOLUMES_ENTRIES,
            c.VOLUMES_COMMIT,
        )
    )
    + _answers(AGENT, GATEWAY),
    CRON: Grants(publish=(c.all_of(c.INVOKE),), subscribe=(c.wildcard(c.EVENT_APP),)),
}

# What every node's agent may do, whichever node it is (``node_grants`` adds
# the node's own subjects).
_ANY_AGENT: Grants = (
    Grants(
        publish=(
            c.error_event_subject(AGENT),
            c.all_of(c.RESULT),
            # A failed attempt's retry is a new input.
            c.all_of(c.INVOKE),
            c.all_of(c.LOGS),
            c.wildcard(c.EVENT_SNAPSHOT),
            c.SECRETS_FETCH,
            c.SNAPSHOT_LOOKUP,
            c.IMAGE_LOOKUP,
            c.VOLUMES_ENSURE,
            c.VOLUMES_ENTRIES,
            c.VOLUMES_COMMIT,
            c.all_of(c.WEB_REQUEST),
            # A container's Dict/Queue operations, carried out by the gateway.
            c.STORE_REQUEST,
        ),
        # Its containers' processes are its node's own (``node_grants``).
        subscribe=(c.all_of(c.CANCEL), c.health_subject(AGENT)),
    )
    # Commands come from the gateway and the scheduler.
    + _answers(GATEWAY, SCHEDULER)
    + _consumes(c.INVOKE_STREAM)
    + _reads_last(c.RESULTS_STREAM)
)

# A node id that is a valid subject as it is (a dotted hostname): commands
# may name it so too (``thaw_agent.service``'s command subjects).
_SUBJECT_SAFE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


# The node id of the one credential a compose or Kubernetes fleet's agents
# share (``python -m thaw_core.nats_auth``): their nodes are named only when
# they start (a DaemonSet's node names), so it speaks for any node.
ANY_NODE = "*"


def node_grants(node_id: str) -> Grants:
    """The agent of ``node_id``: its own inbox, commands and heartbeats (each
    node has a NATS user of its own, ``NatsAuth.add_node``), and what every
    agent does. It cannot read another node's replies or commands, nor
    publish another node's heartbeats, nor serve (and so read the operations
    on) another node's containers' processes, which only the gateway asks for
    once it has checked the caller may touch the app. ``ANY_NODE``: every node's."""
    if node_id == ANY_NODE:
        return _ANY_AGENT + Grants(
            publish=(c.wildcard(c.EVENT_NODE),),
            subscribe=(
                c.inbox_prefix(AGENT) + ".>",
                c.wildcard(c.AGENT_COMMAND),
                c.wildcard(c.CONTAINER_EXEC),
            ),
        )
    token = c.node_token(node_id)
    names = dict.fromkeys([token] + ([node_id] if _SUBJECT_SAFE.match(node_id) else []))
    return _ANY_AGENT + Grants(
        publish=(c.node_event_subject(token),),
        subscribe=(
            c.agent_inbox_prefix(node_id) + ".>",
            *(c.agent_command_subject(n) for n in names),
            c.container_exec_subject(node_id, "*"),
        ),
    )


# Roles whose services create and update the streams (``Bus.provision``).
PROVISIONERS = frozenset({ADMIN, GATEWAY})


def role_grants(role: str) -> Grants:
    """Everything the user of ``role`` may do."""
    if role not in ROLES:
        raise ValueError(f"no NATS role {role!r} (known: {', '.join(sorted(ROLES))})")
    if role == ADMIN:
        return ROLES[role]
    return _service(role) + ROLES[role]


def may_provision(role: str) -> bool:
    return role in PROVISIONERS


def client_grants(client: str, apps: tuple[str, ...]) -> Grants:
    """An invoke client: publish inputs of the functions of ``apps`` (the
    PubAck comes to its inbox), read the results of its own calls (call ids
    ``contract.client_call_id(client, ...)``); nothing else, and no JetStream
    API at all."""
    return Grants(
        publish=tuple(c.invoke_subject(app, "*") for app in apps),
        subscribe=(c.inbox_prefix(client) + ".>", c.client_results(client)),
        responds=False,
    )
