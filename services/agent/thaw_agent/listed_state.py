"""A container's state as the node's heartbeat lists it.

The heartbeat is the platform's only view of a node's containers: the
scheduler places and reclaims on it, ``thaw container list`` reads what it
recorded. Every ``HEARTBEAT_INTERVAL_S`` alone, that view lags a change by up
to an interval: a container just stopped is still listed, one just idle is
still busy to a sandbox looking for room. So a change of state (and a
container going idle or busy) sets the manager's ``changed`` event, and the
agent's heartbeat loop sends the next heartbeat at once (``AgentService``).
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
