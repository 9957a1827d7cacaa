"""The base of every thaw service process.

Modelled on temporalio's ``Worker``: one object with ``run()``, ``shutdown()``
and ``async with``; its sub-loops run supervised together; shutdown is
graceful, with a timeout after which what is left is cancelled.

A service::

    class Scheduler(Service):
        name = "scheduler"

        async def setup(self) -> None:          # after bus/db/blob are connected
            await self.bus.ensure_consumer(...)

        def loops(self):
            return [self.consume_nodes, self.reconcile]

        async def consume_nodes(self) -> None:
            await self.bus.consume("EVENTS", "scheduler-nodes", self.on_node, stop=self.stopping)

    if __name__ == "__main__":
        main(Scheduler)

Lifecycle:

- ``async with svc`` (or ``await svc.start()``) connects NATS (and provisions the
  streams), Postgres (and migrates) when ``uses_db``, the blob store when
  ``uses_blob``, calls ``setup()``, and starts the health responder on
  ``thaw.health.<name>`` (queue group, so several replicas answer once).
- ``await svc.run()`` runs every loop of ``loops()`` in one ``asyncio.TaskGroup``
  until ``shutdown()`` or until a loop raises. A crash is logged and ends the
  service (``run()`` re-raises it and ``main`` exits non-zero so that the
  supervisor restarts the process): crashes are never hidden.
- ``await svc.shutdown(timeout_s)`` sets ``svc.stopping`` (loops watch it),
  waits up to ``timeout_s`` for them to return, cancels the rest, calls
  ``teardown()`` and closes the connections. It is idempotent and safe to call
  from a signal handler, from ``__aexit__`` and concurrently.

A loop that only answers requests is ``serve_until_stopping(subject, handler)``.

Refusing a message: :meth:`Service.reject` is the one way (structured log line +
``ErrorEvent`` on ``thaw.event.error.<service>``); :meth:`Service.decode` decodes
a bus message and rejects-and-terminates it when it is malformed (both in
``thaw_core.refusal``). Health replies are assembled by ``thaw_core.health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, Self, TypeVar

import msgspec

from thaw_core import metrics, permissions, refusal
from thaw_core.blob import BlobStore, open_blob_store
from thaw_core.bus import Bus, Handler
from thaw_core.config import Settings
from thaw_core.contract import health_subject
from thaw_core.db import Database
from thaw_core.health import assess
from thaw_core.logs import setup_logging
from thaw_core.private_file import private_dir
from thaw_core.refusal import MAX_PAYLOAD_BYTES, error_code, term
from thaw_core.schema import HealthReply, encode
from thaw_core.telemetry import setup_telemetry, shutdown_telemetry

# Services import these from here; their home is ``thaw_core.refusal``.
__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Service",
    "ServiceCrashed",
    "error_code",
    "main",
    "term",
]

T = TypeVar("T")


class ServiceCrashed(RuntimeError):
    """Raised by ``run()`` when one of the service's loops crashed."""


class Service:
    """Base class of a thaw service process; see the module docstring."""

    name: ClassVar[str]
    uses_db: ClassVar[bool] = True
    uses_blob: ClassVar[bool] = False

    # ``bus`` (a property below), ``db`` and ``blob`` are set by start().
    db: Database | None
    blob: BlobStore | None

    def __init__(self, settings: Settings | None = None) -> None:
        if not getattr(type(self), "name", None):
            raise TypeError(f"{type(self).__name__} must set the class attribute `name`")
        self.settings = settings if settings is not None else Settings.from_env()
        self.log = logging.getLogger(f"thaw.{self.name}")
        self.db = None
        self.blob = None
        self.stopping = asyncio.Event()
        self.instance = f"{self.settings.node_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.started_at = 0.0
        self.metrics_url = ""
        self._bus: Bus | None = None
        self._health_sub: Any = None
        self._started = False
        self._loops_task: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None
        self._shutdown_timeout_s = 10.0

    # The bus exists once the service is started; before that, fail loudly.
    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError(f"service {self.name} is not started (use `async with` or start())")
        return self._bus

    @property
    def started(self) -> bool:
        return self._started

    # ------------------------------------------------------------ overridables

    def loops(self) -> Sequence[Callable[[], Awaitable[None]]]:
        """The service's sub-loops; each should return soon after ``self.stopping`` is set."""
        return ()

    async def setup(self) -> None:
        """Called once the connections are up, before the health responder starts."""

    async def teardown(self) -> None:
        """Called by shutdown after the loops have stopped, before connections close."""

    async def checks(self) -> dict[str, str]:
        """Extra health checks, ``{name: "ok" | error}``; merged into the health reply."""
        return {}

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown(self._shutdown_timeout_s)

    async def start(self) -> None:
        """Connect the dependencies, run ``setup()``, start answering health probes."""
        if self._started:
            return
        if self._shutdown_task is not None:
            raise RuntimeError(f"service {self.name} was shut down; make a new one")
        s = self.settings
        # Credentials and containers' configs live here: no other user's.
        private_dir(s.state_dir)
        try:
            self._bus = await Bus.connect(
                s.nats_url,
                name=f"thaw-{self.name}-{self.instance}",
                creds=s.nats_creds,
                replicas=s.nats_replicas,
            )
            # Only the roles granted the streams' API create them; the others
            # find them made by the stack's supervisor or the gateway.
            if permissions.may_provision(self.name):
                await self._bus.provision()
            if self.uses_db:
                self.db = await Database.connect(s.database_url, password=s.database_password())
                await self.db.migrate()
            if self.uses_blob:
                self.blob = open_blob_store(s.blob_url)
            await self.setup()
            port = metrics.serve(s.metrics_host, s.metrics_port)
            self.metrics_url = f"http://{s.metrics_host}:{port}/metrics"
            subject = health_subject(self.name)
            self._health_sub = await self._bus.serve(subject, self._on_health, queue=subject)
        except BaseException:
            await self._close_connections()
            raise
        self.started_at = time.time()
        self._started = True
        self.log.info("service started", extra={"instance": self.instance})

    async def run(self) -> None:
        """Run the loops until ``shutdown()`` or a loop crash (re-raised as ``ServiceCrashed``)."""
        await self.start()
        if self._loops_task is not None:
            raise RuntimeError(f"service {self.name} is already running")
        if self.stopping.is_set():
            return
        self._loops_task = asyncio.create_task(self._run_loops(), name=f"{self.name}:loops")
        try:
            await self._loops_task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # run() itself was cancelled
            # shutdown() cancelled loops that outlived its timeout: a normal stop.
        finally:
            # Normal stop, a crash, or run() itself being cancelled: close everything.
            await self.shutdown(self._shutdown_timeout_s)

    async def _run_loops(self) -> None:
        loops = list(self.loops())
        try:
            async with asyncio.TaskGroup() as tg:
                for fn in loops:
                    tg.create_task(self._supervised(fn), name=f"{self.name}:{_fn_name(fn)}")
                # Keeps run() alive until shutdown even for a service without loops.
                tg.create_task(self.stopping.wait(), name=f"{self.name}:stopping")
        except BaseExceptionGroup as group:
            crashes = [e for e in group.exceptions if not isinstance(e, asyncio.CancelledError)]
            raise ServiceCrashed(
                f"service {self.name}: {len(crashes)} loop(s) crashed: "
                + "; ".join(f"{type(e).__name__}: {e}" for e in crashes)
            ) from (crashes[0] if crashes else group)

    async def _supervised(self, fn: Callable[[], Awaitable[None]]) -> None:
        loop_name = _fn_name(fn)
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("loop crashed; stopping the service", extra={"loop": loop_name})
            self.stopping.set()
            raise
        if not self.stopping.is_set():
            self.log.warning("loop returned before shutdown", extra={"loop": loop_name})

    async def shutdown(self, timeout_s: float = 10) -> None:
        """Stop gracefully: signal the loops, wait up to ``timeout_s``, cancel, close."""
        self.stopping.set()
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(
                self._shutdown(timeout_s), name=f"{self.name}:shutdown"
            )
        # Shielded: a caller that is itself cancelled (e.g. a loop calling
        # shutdown) does not abort the shutdown half-way.
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self, timeout_s: float) -> None:
        t0 = time.monotonic()
        task = self._loops_task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
            if not done:
                self.log.warning(
                    "loops did not stop in time; cancelling them", extra={"timeout_s": timeout_s}
                )
                task.cancel()
                # A loop that swallows cancellation must not hold the process forever.
                await asyncio.wait({task}, timeout=max(1.0, timeout_s / 4))
                if not task.done():
                    self.log.error("a loop ignores cancellation; abandoning it")
        if self._started:
            try:
                await asyncio.wait_for(self.teardown(), timeout=max(1.0, timeout_s))
            except Exception:
                self.log.exception("teardown failed")
        await self._close_connections()
        if self._started:
            self.log.info("service stopped", extra={"shutdown_s": round(time.monotonic() - t0, 3)})
        self._started = False

    async def _close_connections(self) -> None:
        if self._health_sub is not None:
            with contextlib.suppress(Exception):
                await self._health_sub.unsubscribe()
            self._health_sub = None
        for label, res in (("blob", self.blob), ("postgres", self.db), ("nats", self._bus)):
            if res is None:
                continue
            try:
                await asyncio.wait_for(_maybe_await(res.close()), timeout=5)
            except Exception:
                self.log.warning("closing %s failed", label, exc_info=True)
        self.blob = None
        self.db = None
        # The bus object is kept (closed) so that late callers get an error, not None.

    async def serve_until_stopping(
        self, subject: str, handler: Handler, *, queue: str = ""
    ) -> None:
        """A loop: answer ``subject`` with ``handler`` until the service stops."""
        sub = await self.bus.serve(subject, handler, queue=queue)
        try:
            await self.stopping.wait()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # ------------------------------------------------------------ health

    async def health(self) -> HealthReply:
        """This process's health: one check per dependency, run concurrently."""
        probes: dict[str, Awaitable[Any] | None] = {}
        if self.uses_db:
            probes["postgres"] = self.db.ping() if self.db else None
        if self.uses_blob:
            probes["blob"] = self.blob.ping() if self.blob else None
        reply = await assess(
            service=self.name,
            instance=self.instance,
            started_at=self.started_at,
            nats_connected=self._bus is not None and self._bus.connected,
            probes=probes,
            extra=self.checks,
            stopping=self.stopping.is_set(),
        )
        return msgspec.structs.replace(reply, metrics_url=self.metrics_url)

    async def _on_health(self, msg: Any) -> None:
        reply = await self.health()
        if getattr(msg, "reply", None):
            await msg.respond(encode(reply))

    # ------------------------------------------------------------ refusing messages

    async def reject(self, subject: str, payload: bytes, code: str, error: str) -> None:
        """Refuse a malformed or unknown message: log it and publish an ErrorEvent
        (``thaw_core.refusal.reject``). Never raises."""
        await refusal.reject(self.bus, self.name, self.log, subject, payload, code, error)

    async def decode(self, msg: Any, decoder: msgspec.json.Decoder[T]) -> T | None:
        """Decode a bus message; on failure ``reject()`` it, terminate it (a JetStream
        message is never redelivered) and return None."""
        return await refusal.decode(msg, decoder, self.reject)


async def _maybe_await(x: Any) -> Any:
    if asyncio.iscoroutine(x) or isinstance(x, asyncio.Future):
        return await x
    return x


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or repr(fn)


# ---------------------------------------------------------------- process entry


def main(cls: type[Service]) -> None:
    """Process entry point of a service: ``python -m thaw_<name>``.

    Sets up JSON logging and tracing, runs the service until SIGTERM/SIGINT
    (graceful shutdown; a second signal exits at once) or a crash (exit 1).
    """
    settings = Settings.from_env()
    setup_logging(settings.log_level, service=cls.name)
    setup_telemetry(settings, service_name=f"thaw-{cls.name}")
    try:
        code = asyncio.run(_amain(cls, settings))
    except KeyboardInterrupt:
        code = 130
    finally:
        shutdown_telemetry()
        logging.shutdown()
    sys.exit(code)


async def _amain(cls: type[Service], settings: Settings) -> int:
    log = logging.getLogger(f"thaw.{cls.name}")
    svc = cls(settings)
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals_seen = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal; exiting now", extra={"signal": sig.name})
            os._exit(1)
        log.info("signal received; shutting down", extra={"signal": sig.name})
        if svc.started:
            loop.create_task(svc.shutdown())
        else:  # still connecting: abandon start-up
            svc.stopping.set()
            if main_task is not None:
                main_task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with svc:
            await svc.run()
    except asyncio.CancelledError:
        return 0 if signals_seen else 1
    except ServiceCrashed:
        log.exception("service crashed")
        return 1
    except Exception:
        log.exception("service failed")
        return 1
    return 0
