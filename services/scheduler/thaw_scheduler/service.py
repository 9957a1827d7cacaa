"""The scheduler's lifecycle. For now: keep the ``nodes`` table current.

It consumes ``thaw.event.node.*`` (EVENTS stream) through the durable pull
consumer ``scheduler-nodes``, decodes each message with one decoder built at
start-up, dispatches on the decoded type with ``match``, and upserts
heartbeats into ``nodes``. A malformed message is refused through
``Service.reject`` (ErrorEvent on ``thaw.event.error.scheduler``) and
terminated, never redelivered; the loop carries on with the next one.
Placement and autoscaling (later issues) live in other modules of this package.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from thaw_core.bus import Msg
from thaw_core.schema import NodeHeartbeat, decoder
from thaw_core.service import Service, term

NODES_STREAM = "EVENTS"
NODES_DURABLE = "scheduler-nodes"
NODES_SUBJECT = "thaw.event.node.*"

# Every message type the node subjects carry; a union once there are several.
NodeEvent = NodeHeartbeat

# ``inventory`` is the latest heartbeat as JSON; an older heartbeat delivered
# late (redelivery) never overwrites a newer one.
UPSERT_NODE = """
INSERT INTO nodes (id, inventory, last_seen)
VALUES ($1, $2, to_timestamp($3))
ON CONFLICT (id) DO UPDATE SET
    inventory = EXCLUDED.inventory,
    last_seen = EXCLUDED.last_seen
WHERE nodes.last_seen <= EXCLUDED.last_seen
"""


class SchedulerService(Service):
    name = "scheduler"

    async def setup(self) -> None:
        self._node_decoder = decoder(NodeEvent)
        await self.bus.ensure_consumer(
            NODES_STREAM,
            NODES_DURABLE,
            filter_subject=NODES_SUBJECT,
            ack_wait_s=30,
            max_deliver=20,
            max_ack_pending=1000,
        )

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self.node_events]

    async def node_events(self) -> None:
        await self.bus.consume(
            NODES_STREAM, NODES_DURABLE, self.on_node_event, batch=100, stop=self.stopping
        )

    async def on_node_event(self, msg: Msg) -> None:
        event = await self.decode(msg, self._node_decoder)
        match event:
            case None:
                return  # refused and terminated by decode()
            case NodeHeartbeat():
                await self.upsert_node(event)
            case _:
                await self.reject(
                    msg.subject, msg.data, "unknown", f"unhandled {type(event).__name__}"
                )
                await term(msg)

    async def upsert_node(self, hb: NodeHeartbeat) -> None:
        assert self.db is not None
        await self.db.execute(UPSERT_NODE, hb.node_id, hb, hb.at)
