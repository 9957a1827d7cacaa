"""Dict and Queue speed, measured in one run and printed side by side.

- ``thaw.Dict`` put/get latency (p50, p99) and ops/s from local code (SDK ->
  gateway -> JetStream KV) and from inside a container (-> agent -> gateway
  -> KV), against a plain nats-py KV client on the same nats-server doing the
  same operations (the floor: one client, no gateway).
- ``thaw.Queue`` throughput: items/s put (put_many) and taken (get_many)
  locally and in a container, and single-item put+get round trips.

``THAW_BENCH_STORE_OPS`` (default 1000) sets how many operations of each.
Run with ``make bench``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path

import nats
import pytest
import thaw as modal
from fixtures.nats import role_creds
from fixtures.platform import Platform
from fixtures.stats import pct
from thaw_core import permissions
from thaw_core.nats_auth import connect_options

APP = Path(__file__).parent / "apps" / "bench_stores.py"
OPS = int(os.environ.get("THAW_BENCH_STORE_OPS", "1000"))
QUEUE_ITEMS = 10 * OPS

pytestmark = pytest.mark.timeout(1800)


def ms(xs: list[float], q: float) -> float:
    """The ``q`` quantile of timings in seconds, in milliseconds."""
    return pct(xs, q) * 1000


def line(title: str, xs: list[float], floor: list[float] | None = None) -> str:
    p50, p99, per_s = ms(xs, 0.5), ms(xs, 0.99), len(xs) / sum(xs)
    text = f"{title:<34} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {per_s:7.0f} ops/s"
    if floor:
        text += f"  ({p50 / ms(floor, 0.5):.1f}x the plain KV client's p50)"
    return text


def timed(fn, n: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


async def plain_kv(nats_url: str, n: int) -> tuple[list[float], list[float]]:
    # A plain client as another program would be: with a credential (here admin's).
    nc = await nats.connect(nats_url, **connect_options(Path(role_creds(permissions.ADMIN))))
    try:
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=f"bench_plain_{uuid.uuid4().hex[:8]}", history=1)
        puts, gets = [], []
        for i in range(n):
            t = time.perf_counter()
            await kv.put(f"k{i}", b'{"i":%d}' % i)
            puts.append(time.perf_counter() - t)
        for i in range(n):
            t = time.perf_counter()
            await kv.get(f"k{i}")
            gets.append(time.perf_counter() - t)
        await js.delete_key_value(kv._name)
        return puts, gets
    finally:
        await nc.close()


def test_dict_and_queue_speed(use_platform: Platform) -> None:
    p = use_platform
    p.deploy(APP)
    plain_put, plain_get = asyncio.run(plain_kv(p.base_env["THAW_NATS_URL"], OPS))

    with modal.Dict.ephemeral() as d:
        d["warm"] = 1
        local_put = timed(lambda i: d.__setitem__(f"k{i}", {"i": i}), OPS)
        local_get = timed(lambda i: d[f"k{i}"], OPS)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    inside = modal.Function.from_name("bench-stores", "dict_ops")
    inside.remote(name, 10)  # a warm container
    got = inside.remote(name, OPS)
    modal.Dict.delete(name)

    with modal.Queue.ephemeral() as q:
        q.put("warm")
        q.get()
        one = timed(lambda i: (q.put(i), q.get()), OPS)
        t = time.perf_counter()
        q.put_many(range(QUEUE_ITEMS))
        put_s = time.perf_counter() - t
        t = time.perf_counter()
        taken = 0
        while taken < QUEUE_ITEMS:
            taken += len(q.get_many(100, timeout=30))
        take_s = time.perf_counter() - t
        q.put_many(range(QUEUE_ITEMS))
        drain = modal.Function.from_name("bench-stores", "queue_drain")
        in_container_s = drain.remote(q.name, QUEUE_ITEMS, 100)

    print(f"\nDict and Queue, {OPS} operations each (same nats-server, one run):")
    print(line("plain nats-py KV put", plain_put))
    print(line("plain nats-py KV get", plain_get))
    print(line("thaw.Dict put, local code", local_put, plain_put))
    print(line("thaw.Dict get, local code", local_get, plain_get))
    print(line("thaw.Dict put, in a container", got["put"], plain_put))
    print(line("thaw.Dict get, in a container", got["get"], plain_get))
    print(line("thaw.Queue put+get of one item", one))
    print(
        f"thaw.Queue {QUEUE_ITEMS} items: put_many {QUEUE_ITEMS / put_s:.0f} items/s,"
        f" get_many(100) {QUEUE_ITEMS / take_s:.0f} items/s locally,"
        f" {QUEUE_ITEMS / in_container_s:.0f} items/s in a container"
    )
    assert statistics.median(local_get) > 0
