"""What is deployed, held in memory so that a call costs no database query.

The catalog is loaded from Postgres at start, updated in place by this
gateway's own deploys and stops, reloaded per app on every ``AppEvent`` (other
gateway replicas deploy too) and reloaded whole every ``REFRESH_EVERY_S`` in
case events were missed while NATS was away. A name it does not know is looked
up in Postgres once before it is called unknown, so a deploy made through
another replica is callable before its event arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from thaw_core import contract
from thaw_core.bus import Bus
from thaw_core.db import Database
from thaw_core.schema import AppEvent, FunctionSpec

from thaw_gateway.errors import conflict, not_found

log = logging.getLogger("thaw.gateway")

REFRESH_EVERY_S = 30.0
APP_ID_PREFIX = "ap-"
APP_EVENTS = contract.wildcard(contract.EVENT_APP)

# One row per app: its current version, bundle and functions.
_APPS_SQL = """
SELECT a.id, a.name, a.state, a.version, a.ephemeral, v.bundle_sha256,
       extract(epoch FROM a.created_at)::float8 AS created_at,
       extract(epoch FROM a.updated_at)::float8 AS updated_at,
       coalesce(jsonb_agg(f.spec ORDER BY f.name) FILTER (WHERE f.name IS NOT NULL), '[]')
           AS specs
FROM apps a
LEFT JOIN app_versions v ON v.app = a.name AND v.version = a.version
LEFT JOIN functions f ON f.app = a.name AND f.version = a.version
WHERE $1::text IS NULL OR a.name = $1 OR a.id = $1
GROUP BY a.id, a.name, a.state, a.version, a.ephemeral, v.bundle_sha256, a.created_at, a.updated_at
ORDER BY a.name = $1 DESC  -- a name wins over an id that happens to be spelled the same
"""


@dataclass(frozen=True)
class DeployedApp:
    name: str
    version: int
    state: Literal["deployed", "stopped"]
    functions: dict[str, FunctionSpec]
    bundle_sha256: str = ""
    ephemeral: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    app_id: str = ""

    @property
    def live(self) -> bool:
        return self.state == "deployed"


def _from_row(row: Any) -> DeployedApp:
    functions: dict[str, FunctionSpec] = {}
    for raw in row["specs"]:
        try:
            spec = msgspec.convert(raw, FunctionSpec)
        except msgspec.ValidationError as e:
            # A spec stored by a newer or older gateway than this one: skip the
            # function (it answers 404) rather than the whole app.
            log.error("app %s: unreadable stored function spec: %s", row["name"], e)
            continue
        functions[spec.name] = spec
    return DeployedApp(
        name=row["name"],
        version=row["version"],
        state=row["state"],
        functions=functions,
        bundle_sha256=row["bundle_sha256"] or "",
        ephemeral=row["ephemeral"],
        created_at=row["created_at"] or 0.0,
        updated_at=row["updated_at"] or 0.0,
        app_id=row["id"],
    )


def _newer(a: DeployedApp, b: DeployedApp) -> bool:
    return (a.version, a.updated_at) > (b.version, b.updated_at)


@dataclass
class FunctionCatalog:
    db: Database
    _apps: dict[str, DeployedApp] = field(default_factory=dict)
    _event_decoder: msgspec.json.Decoder[AppEvent] = field(
        default_factory=lambda: msgspec.json.Decoder(AppEvent)
    )

    def apps(self) -> list[DeployedApp]:
        return sorted(self._apps.values(), key=lambda a: a.name)

    async def load_all(self) -> None:
        rows = await self.db.fetch(_APPS_SQL, None)
        loaded = {row["name"]: _from_row(row) for row in rows}
        # A deploy may have landed in the cache while the query ran: keep the newer.
        for name, app in loaded.items():
            current = self._apps.get(name)
            if current is not None and _newer(current, app):
                loaded[name] = current
        self._apps = loaded

    async def reload(self, ref: str) -> DeployedApp | None:
        """The app named ``ref``, or whose id is ``ref``, as stored now."""
        row = await self.db.fetchrow(_APPS_SQL, ref)
        if row is None:
            self._apps.pop(ref, None)
            return None
        app = _from_row(row)
        self._apps[app.name] = app
        return app

    def put(self, app: DeployedApp) -> None:
        """Record a change this gateway just made (before its event comes back)."""
        current = self._apps.get(app.name)
        if current is None or not _newer(current, app):
            self._apps[app.name] = app

    def _cached(self, ref: str) -> DeployedApp | None:
        app = self._apps.get(ref)
        if app is None and ref.startswith(APP_ID_PREFIX):
            app = next((a for a in self._apps.values() if a.app_id == ref), None)
        return app

    async def get_app(self, ref: str) -> DeployedApp:
        """The app named ``ref`` or with id ``ref``; 404 when there is none."""
        app = self._cached(ref) or await self.reload(ref)
        if app is None:
            raise not_found(f"no app named {ref!r} is deployed")
        return app

    async def resolve(self, app_name: str, function: str) -> tuple[DeployedApp, FunctionSpec]:
        """The live app and function a call goes to; 404 when unknown, 409 when stopped."""
        app = self._apps.get(app_name)
        if app is None or function not in app.functions:
            app = await self.reload(app_name)
        if app is None:
            raise not_found(f"no app named {app_name!r} is deployed")
        spec = app.functions.get(function)
        if spec is None:
            known = ", ".join(sorted(app.functions)) or "none"
            raise not_found(
                f"app {app_name!r} (version {app.version}) has no function {function!r};"
                f" its functions: {known}"
            )
        if not app.live:
            raise conflict(
                f"app {app_name!r} is stopped; deploy it again to call {function!r}"
            )
        return app, spec

    # ------------------------------------------------------------ keeping fresh

    async def follow(self, bus: Bus) -> Any:
        """Subscribe to AppEvents (plain NATS: JetStream delivers stored
        events to core subscribers too); returns the subscription, live on
        the server by then."""

        async def on_message(msg: Any) -> None:
            await self.on_event(msg.data)

        return await bus.serve(APP_EVENTS, on_message)

    async def on_event(self, data: bytes) -> None:
        try:
            event = self._event_decoder.decode(data)
        except msgspec.DecodeError as e:
            log.warning("ignoring a malformed AppEvent: %s", e)
            return
        current = self._apps.get(event.app)
        if current is not None and (current.version, current.state) == (event.version, event.state):
            return  # our own change, already applied
        try:
            await self.reload(event.app)
        except Exception:  # the periodic refresh catches up
            log.warning("could not reload app %s after its event", event.app, exc_info=True)

    async def refresh_forever(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), REFRESH_EVERY_S)
                return
            try:
                await self.load_all()
            except Exception:  # keep serving from what we have
                log.warning("catalog refresh failed; serving the cached one", exc_info=True)
