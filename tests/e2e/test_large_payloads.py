"""Large arguments and results (issue #16, items 1 and 2), on the real stack:
5 MB, 100 MB and 1 GiB values through the SDK and the raw HTTP API, kept in
the blob store (a local directory, so the 1 GiB cases run as fast as the
disk allows), with the gateway's memory watched while they pass."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import thaw as modal
from fixtures.platform import Platform

APPS = Path(__file__).parent / "apps"
APP = "large-payloads"
NODE = "big-a"
MB = 1000 * 1000
MIB = 1 << 20
GIB = 1 << 30
SIZES = [5 * MB, 100 * MB, GIB]
# What a 1 GiB result may add to the gateway's memory (the bound).
RESULT_RSS_BOUND = 64 * MIB
# The platform's limits: the gateway's memory for bodies read whole, and the
# largest payload (over 1 GiB and its pickle's framing, under what we refuse).
BODY_BUDGET = 192 * MIB
PAYLOAD_MAX = GIB + 64 * MIB

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def big(
    platform_factory: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> Platform:
    blobs = tmp_path_factory.mktemp("large-payload-blobs")
    p: Platform = await platform_factory(
        (NODE,),
        env={
            "THAW_BLOB_URL": f"file://{blobs}",
            "THAW_GATEWAY_BODY_BUDGET_BYTES": str(BODY_BUDGET),
            "THAW_PAYLOAD_MAX_BYTES": str(PAYLOAD_MAX),
        },
    )
    await asyncio.to_thread(p.deploy, APPS / "large_payloads.py")
    return p


@pytest.fixture
def use(big: Platform, monkeypatch: pytest.MonkeyPatch) -> Platform:
    monkeypatch.setenv("THAW_GATEWAY_URL", big.gateway_url)
    monkeypatch.setenv("THAW_TOKEN", big.token)
    return big


def fn(name: str) -> Any:
    return modal.Function.from_name(APP, name)


def pattern(size: int, seed: int) -> bytes:
    """What ``make(size, seed)`` returns (the app's own recipe)."""
    block = hashlib.sha256(str(seed).encode()).digest() * (1 << 15)
    whole, rest = divmod(size, len(block))
    return block * whole + block[:rest]


class PeakRss:
    """The highest RSS a process reaches while watched, sampled every 5 ms."""

    def __init__(self, pid: int) -> None:
        self._proc = psutil.Process(pid)
        self.base = self._proc.memory_info().rss
        self.peak = self.base
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def rise(self) -> int:
        return self.peak - self.base


@contextmanager
def watching(platform: Platform) -> Iterator[PeakRss]:
    rss = PeakRss(platform.procs["gateway"].proc.pid)
    rss._thread.start()
    try:
        yield rss
    finally:
        rss._done.set()
        rss._thread.join()


def _headers(platform: Platform, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.token}", **more}


# ---------------------------------------------------------------- through the SDK


@pytest.mark.parametrize("size", SIZES[:2], ids=["5MB", "100MB"])
def test_an_argument_and_result_round_trip_through_the_sdk(use: Platform, size: int) -> None:
    data = pattern(size, size)
    assert fn("echo").remote(data) == data


def test_a_1gib_argument_through_the_sdk(use: Platform) -> None:
    data = pattern(GIB, 1)
    want = hashlib.sha256(data).hexdigest()
    with watching(use) as rss:
        assert fn("digest").remote(data) == want
    del data
    print(f"\n1 GiB argument: gateway RSS rose by {rss.rise / MIB:.1f} MiB")
    assert rss.rise < RESULT_RSS_BOUND, f"the gateway's RSS rose by {rss.rise / MIB:.0f} MiB"


def test_a_1gib_result_through_the_sdk_leaves_the_gateways_memory_alone(use: Platform) -> None:
    want = hashlib.sha256(pattern(GIB, 2)).hexdigest()
    with watching(use) as rss:
        got = fn("make").remote(GIB, 2)
    assert len(got) == GIB and hashlib.sha256(got).hexdigest() == want
    del got
    print(f"\n1 GiB result: gateway RSS rose by {rss.rise / MIB:.1f} MiB")
    assert rss.rise < RESULT_RSS_BOUND, f"the gateway's RSS rose by {rss.rise / MIB:.0f} MiB"


def test_a_map_passes_large_items_and_results(use: Platform) -> None:
    items = [pattern(3 * MB, i) for i in range(4)]
    assert list(fn("echo").map(items)) == items


# ---------------------------------------------------------------- over HTTP


async def _call(
    session: aiohttp.ClientSession, platform: Platform, function: str, body: dict[str, Any]
) -> dict[str, Any]:
    url = f"{platform.gateway_url}/v1/functions/{APP}/{function}/calls?wait=300"
    async with session.post(url, json=body, headers=_headers(platform)) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 200, answer
    assert answer["status"] == "success", answer
    return answer


async def _upload(session: aiohttp.ClientSession, platform: Platform, data: bytes) -> Any:
    sha = hashlib.sha256(data).hexdigest()
    async with session.put(
        f"{platform.gateway_url}/v1/payloads/{sha}",
        data=data,
        headers=_headers(platform, **{"Content-Type": "application/octet-stream"}),
    ) as resp:
        answer = await resp.json()
        assert resp.status == 201, answer
    assert answer["ref"]["sha256"] == sha and answer["ref"]["size"] == len(data)
    return answer["ref"]


@pytest.mark.parametrize("size", SIZES, ids=["5MB", "100MB", "1GiB"])
async def test_an_uploaded_argument_over_http(big: Platform, size: int) -> None:
    """A client of the raw API uploads the pickled (args, kwargs), then names it."""
    data = pattern(size, 3)
    want = hashlib.sha256(data).hexdigest()
    payload = pickle.dumps(((data,), {}), protocol=5)
    del data
    async with aiohttp.ClientSession() as session:
        ref = await _upload(session, big, payload)
        del payload
        body = {"codec": "pickle", "payload_ref": ref}
        answer = await _call(session, big, "digest", body)
    assert answer["value_ref"] is None
    assert pickle.loads(base64.b64decode(answer["value_b64"])) == want


@pytest.mark.parametrize("size", SIZES, ids=["5MB", "100MB", "1GiB"])
async def test_a_large_json_result_over_http(big: Platform, size: int) -> None:
    """A large result is named by its result; its bytes stream from /value."""
    async with aiohttp.ClientSession() as session:
        answer = await _call(session, big, "text", {"args": [size]})
        ref = answer["value_ref"]
        assert answer["value"] is None and ref["size"] == size + 2  # the JSON string's quotes
        h, n = hashlib.sha256(), 0
        with watching(big) as rss:
            async with session.get(
                f"{big.gateway_url}/v1/calls/{answer['call_id']}/value", headers=_headers(big)
            ) as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_chunked(MIB):
                    h.update(chunk)
                    n += len(chunk)
    assert n == size + 2 and h.hexdigest() == ref["sha256"]
    assert h.hexdigest() == hashlib.sha256(b'"' + b"x" * size + b'"').hexdigest()
    assert rss.rise < RESULT_RSS_BOUND, f"the gateway's RSS rose by {rss.rise / MIB:.0f} MiB"


async def test_large_inline_json_arguments_are_kept_apart(big: Platform) -> None:
    """Arguments a JSON body carries inline, over the threshold, still run."""
    async with aiohttp.ClientSession() as session:
        answer = await _call(session, big, "text", {"args": [5 * MB]})
        assert answer["value_ref"]["size"] == 5 * MB + 2
        body = {
            "codec": "pickle",
            "payload": base64.b64encode(pickle.dumps(((b"y" * 5 * MB,), {}))).decode(),
        }
        answer = await _call(session, big, "digest", body)
    assert (
        pickle.loads(base64.b64decode(answer["value_b64"]))
        == hashlib.sha256(b"y" * 5 * MB).hexdigest()
    )


def test_an_upload_over_the_limit_is_refused_before_it_is_sent(big: Platform) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", big.gateway_port, timeout=30)
    try:
        conn.putrequest("PUT", "/v1/payloads/" + "0" * 64)
        for k, v in _headers(big, **{"Content-Type": "application/octet-stream"}).items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(2 * GIB))
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read().decode()
    finally:
        conn.close()
    assert resp.status == 413, body
    assert "THAW_PAYLOAD_MAX_BYTES" in body and str(PAYLOAD_MAX) in body


# ---------------------------------------------------------------- the gateway's memory


async def test_eight_concurrent_60mb_bodies_keep_the_gateway_within_its_budget(
    big: Platform,
) -> None:
    """Eight 60 MB uploads and eight 60 MB JSON call bodies at once: uploads
    stream, JSON bodies wait for their share of the budget."""
    size = 60 * MB
    blobs = [pattern(size, 100 + i) for i in range(8)]
    # JSON bodies of about 60 MB: base64 of 45 MB of pickled arguments.
    json_args = [pickle.dumps(((pattern(45 * MB, 200 + i),), {})) for i in range(8)]
    bodies = [{"codec": "pickle", "payload": base64.b64encode(a).decode()} for a in json_args]
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        with watching(big) as rss:
            refs = await asyncio.gather(*(_upload(session, big, b) for b in blobs))
            upload_rise = rss.rise
            answers = await asyncio.gather(*(_call(session, big, "digest", b) for b in bodies))
    print(
        f"\n8 x 60 MB: uploads raised the gateway's RSS by {upload_rise / MIB:.0f} MiB,"
        f" JSON bodies by {rss.rise / MIB:.0f} MiB (budget {BODY_BUDGET / MIB:.0f} MiB)"
        f" in {time.monotonic() - started:.1f}s"
    )
    assert [r["size"] for r in refs] == [size] * 8
    for args, answer in zip(json_args, answers, strict=True):
        data = pickle.loads(args)[0][0]
        assert (
            pickle.loads(base64.b64decode(answer["value_b64"])) == hashlib.sha256(data).hexdigest()
        )
    assert upload_rise < 64 * MIB, f"streamed uploads took {upload_rise / MIB:.0f} MiB"
    # The budget, and room for what a request holds besides its body.
    assert rss.rise < BODY_BUDGET + 64 * MIB, f"the gateway's RSS rose by {rss.rise / MIB:.0f} MiB"
