"""Health probes of the stack's parts, shared by `thaw up` (waiting for the
stack to come up) and `thaw status`.

Each probe returns "ok" or a short error text; none raises or waits long.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import msgspec
import nats
import nats.errors
from thaw_core.blob import open_blob_store
from thaw_core.config import Settings, split_urls
from thaw_core.contract import health_subject
from thaw_core.nats_auth import connect_options
from thaw_core.schema import HealthReply, decoder

PROBE_TIMEOUT_S = 3.0

_health_decoder = decoder(HealthReply)


def _err(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def check_nats(nats_url: str, creds: Path) -> str:
    """Log in with ``creds`` and ask JetStream for the account's state: ready
    when it answers. (Over NATS itself, not the server's HTTP monitor: that
    would be a socket anyone on the machine could read without a credential.)"""
    try:
        nc = await _probe_connection(nats_url, creds)
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return _err(exc)
    try:
        await nc.jetstream(timeout=PROBE_TIMEOUT_S).account_info()
        return "ok"
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return f"jetstream: {_err(exc)}"
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2)


async def check_postgres(settings: Settings) -> str:
    """Connect as the services do (the password from its file); the reply
    names the error, never the password."""
    try:
        conn = await asyncpg.connect(
            settings.database_url, password=settings.database_password(), timeout=PROBE_TIMEOUT_S
        )
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return _err(exc)
    try:
        await asyncio.wait_for(conn.fetchval("SELECT 1"), PROBE_TIMEOUT_S)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return _err(exc)
    finally:
        try:
            await asyncio.wait_for(conn.close(), 1)
        except Exception:  # noqa: BLE001 - closing a broken connection
            conn.terminate()


async def check_blob(url: str) -> str:
    store = None
    try:
        store = open_blob_store(url)
        await asyncio.wait_for(store.ping(), PROBE_TIMEOUT_S)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return _err(exc)
    finally:
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()


@dataclass(frozen=True)
class ServiceHealth:
    status: str  # "ok" or the error / the failing checks
    pid: int | None = None
    reply: HealthReply | None = None


async def _probe_connection(nats_url: str, creds: Path) -> nats.NATS:
    """A connection that tries once and says nothing.

    nats-py hands every connection error to the error callback, whose default
    logs it with its traceback (on stderr, ahead of `thaw status --json`'s
    document); here the error is the probe's result instead. Its server pool
    retries forever with ``max_reconnect_attempts=0``, every
    ``reconnect_time_wait``: one retry at most, and the whole connect bounded
    by PROBE_TIMEOUT_S."""
    seen: list[Exception] = []

    async def note(exc: Exception) -> None:
        seen.append(exc)

    try:
        return await asyncio.wait_for(
            nats.connect(
                split_urls(nats_url),
                connect_timeout=PROBE_TIMEOUT_S,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=note,
                name="thaw-status",
                **connect_options(creds),
            ),
            PROBE_TIMEOUT_S,
        )
    except Exception as exc:  # noqa: BLE001 - re-raised, as the error that explains it
        # The server's refusal says more than the pool's "no servers available".
        raise (seen[-1] if seen else exc) from None


async def check_services(
    nats_url: str, names: Iterable[str], creds: Path
) -> dict[str, ServiceHealth]:
    """Ask each service on its health subject, over one short-lived connection
    logged in with ``creds``."""
    names = list(names)
    try:
        nc = await _probe_connection(nats_url, creds)
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return {n: ServiceHealth(f"nats unreachable ({_err(exc)})") for n in names}
    try:
        results = await asyncio.gather(*(_ask(nc, n) for n in names))
        return dict(zip(names, results))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2)


async def _ask(nc: nats.NATS, name: str) -> ServiceHealth:
    try:
        msg = await nc.request(health_subject(name), b"{}", timeout=PROBE_TIMEOUT_S)
    except nats.errors.NoRespondersError:
        return ServiceHealth("not answering (no responders)")
    except (TimeoutError, nats.errors.TimeoutError):
        return ServiceHealth(f"no health reply in {PROBE_TIMEOUT_S:g}s")
    except Exception as exc:  # noqa: BLE001 - a probe reports, never raises
        return ServiceHealth(_err(exc))
    if msg.headers and "Nats-Service-Error" in msg.headers:
        return ServiceHealth(f"health handler failed: {msg.headers['Nats-Service-Error']}")
    try:
        reply = _health_decoder.decode(msg.data)
    except msgspec.DecodeError as exc:
        return ServiceHealth(f"bad health reply: {exc}")
    if reply.status == "ok":
        return ServiceHealth("ok", reply.pid, reply)
    bad = ", ".join(f"{k}: {v}" for k, v in reply.checks.items() if v != "ok")
    return ServiceHealth(f"{reply.status} ({bad})" if bad else reply.status, reply.pid, reply)
