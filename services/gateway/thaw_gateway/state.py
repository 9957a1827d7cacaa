"""What every handler reaches through ``request.app``: the gateway's
connections and its in-memory state."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from thaw_core.blob import BlobStore
from thaw_core.bus import Bus
from thaw_core.config import Settings
from thaw_core.db import Database
from thaw_core.refusal import Reject
from thaw_core.schema import HealthReply

if TYPE_CHECKING:
    from thaw_gateway.auth import TokenStore
    from thaw_gateway.call_log import CallLog
    from thaw_gateway.catalog import FunctionCatalog
    from thaw_gateway.results import ResultHub
    from thaw_gateway.secret_store import SecretStore
    from thaw_gateway.web_hub import WebHub


@dataclass(frozen=True)
class Gateway:
    settings: Settings
    bus: Bus
    db: Database
    blob: BlobStore
    tokens: TokenStore
    catalog: FunctionCatalog
    results: ResultHub
    calls: CallLog
    secrets: SecretStore
    # Signs the builder's leave to fetch a build's registry secret
    # (thaw_core.secrets_grant), and checks every fetch's.
    grant_key: bytes
    # Set when the service shuts down: streams that would run forever end.
    stopping: asyncio.Event
    reject: Reject
    health: Callable[[], Awaitable[HealthReply]]
    web: WebHub


GATEWAY: web.AppKey[Gateway] = web.AppKey("thaw_gateway.gateway", Gateway)


def gateway(request: web.Request) -> Gateway:
    return request.app[GATEWAY]
