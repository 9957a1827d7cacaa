"""A container's state as the node's heartbeat lists it.

The heartbeat is the platform's only view of a node's containers: the
scheduler places and reclaims on it, ``thaw container list`` reads what it
recorded. Sent every ``HEARTBEAT_INTERVAL_S`` alone, that view lags a change
by up to an interval: a container just stopped is still listed, one just
started is not yet. So a change of state sets the manager's ``changed``
event, and the agent's heartbeat loop sends the next heartbeat at once
(``AgentService``). A container going idle or busy does not: that happens
per input, and a heartbeat per input would load the hot path (the scheduler
writes each heartbeat to Postgres). Where idleness matters, a sandbox looking
for room, the scheduler waits for a heartbeat taken after it was asked.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

S = TypeVar("S")


class ListedState(Generic[S]):
    """A descriptor: the state, kept in ``_<name>``; setting a new one sets
    ``obj.host.changed``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = "_" + name

    def __get__(self, obj: Any, objtype: type | None = None) -> S:
        return getattr(obj, self._attr)

    def __set__(self, obj: Any, state: S) -> None:
        if getattr(obj, self._attr, None) != state:
            setattr(obj, self._attr, state)
            obj.host.changed.set()
