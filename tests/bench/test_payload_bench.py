"""Large arguments: MB/s of a 100 MB argument's round trip (``echo.remote``:
the SDK uploads it, the agent hands it to the container, the result comes
back the same way) beside a plain copy through the same blob store (one put
and one get of the same bytes). Run with ``make bench``."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest
import thaw as modal
from fixtures.platform import Platform
from thaw_core.blob import open_blob_store

APP = Path(__file__).parents[1] / "e2e" / "apps" / "large_payloads.py"
SIZE = 100 * 1000 * 1000
ROUNDS = int(os.environ.get("THAW_BENCH_PAYLOAD_ROUNDS", "3"))

pytestmark = pytest.mark.timeout(1800)


async def plain_copy(blob_url: str, data: bytes) -> float:
    """Seconds for one put and one get of ``data`` through the blob store."""
    store = open_blob_store(blob_url)
    key = f"bench/{uuid.uuid4().hex}"
    sha = hashlib.sha256(data).hexdigest()
    try:
        t = time.perf_counter()
        await store.put(key, data, sha256=sha)
        got = await store.get(key, sha256=sha)
        took = time.perf_counter() - t
        assert len(got) == len(data)
        await store.delete(key)
    finally:
        await store.close()
    return took


async def test_100mb_argument_round_trip_vs_a_blob_copy(
    platform: Platform, use_platform: Platform
) -> None:
    out = platform.cli("deploy", str(APP), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    echo = modal.Function.from_name("large-payloads", "echo")
    data = os.urandom(1 << 20) * (SIZE >> 20)
    assert await echo.remote.aio(data[:10]) == data[:10]  # warm
    trips = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        assert await echo.remote.aio(data) == data
        trips.append(time.perf_counter() - t)
    copies = [await plain_copy(platform.base_env["THAW_BLOB_URL"], data) for _ in range(ROUNDS)]
    mb = len(data) / 1e6
    trip_s, copy_s = min(trips), min(copies)
    print(
        f"\n100 MB argument round trip: {mb / trip_s:.0f} MB/s ({trip_s:.2f} s, best of"
        f" {ROUNDS}); plain blob-store put+get: {mb / copy_s:.0f} MB/s ({copy_s:.2f} s);"
        f" round trip / copy: {trip_s / copy_s:.1f}x"
    )
