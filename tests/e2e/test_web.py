"""Web endpoints on the real platform, as a user reaches them: deployed with
`thaw deploy`, curl-able at the URLs it prints, from zero and warm."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fixtures.platform import Platform
from fixtures.wait import eventually_blocking
from fixtures.web import COLD_START_BOUND_S, past_cold_start

APPS = Path(__file__).parent / "apps"
THAW = [sys.executable, "-m", "thaw.cli"]

pytestmark = pytest.mark.usefixtures("use_platform")


def thaw_cli(
    platform: Platform, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "THAW_GATEWAY_URL": platform.gateway_url, "THAW_TOKEN": platform.token}
    return subprocess.run(
        [*THAW, *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def fetch(
    url: str, data: bytes | None = None, *, method: str | None = None, timeout: float = 180
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def urls(platform: Platform) -> dict[str, str]:
    out = thaw_cli(platform, "deploy", str(APPS / "web_guide.py"))
    assert out.returncode == 0, out.stdout + out.stderr
    printed = dict(re.findall(r"^web (\S+): (\S+)$", out.stdout, re.MULTILINE))
    assert set(printed) >= {
        "predict",
        "fastapi_app",
        "flask_app",
        "file_server",
        "silent_server",
    }, out.stdout
    return printed


def test_web_endpoint_answers_from_zero_and_warm(urls: dict[str, str], platform: Platform) -> None:
    request = partial(fetch, urls["predict"], json.dumps({"input": 3}).encode())
    for _ in range(2):  # the first from zero, the second warm
        status, _, body = past_cold_start(request)
        assert status == 200, body.decode() + platform.logs()
        assert json.loads(body) == {"prediction": "predicted:3"}


def test_asgi_app_answers_at_its_routes(urls: dict[str, str], platform: Platform) -> None:
    request = partial(fetch, urls["fastapi_app"] + "/predict", json.dumps({"input": 4}).encode())
    for _ in range(2):
        status, _, body = past_cold_start(request)
        assert status == 200, body.decode() + platform.logs()
        assert json.loads(body) == {"result": "predicted:4"}


def test_the_guide_example_answers_curl(urls: dict[str, str]) -> None:
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", "-H", "Content-Type: application/json"]
        + ["-d", '{"input": 5}', urls["predict"]],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"prediction": "predicted:5"}


def test_every_method_headers_query_and_status_pass_through(urls: dict[str, str]) -> None:
    url = urls["fastapi_app"] + "/echo?status=418&a=1&a=2"
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        data = b"payload" if method in ("POST", "PUT", "PATCH") else None
        req = urllib.request.Request(url, data=data, method=method, headers={"X-Probe": method})
        try:
            urllib.request.urlopen(req, timeout=180)
            pytest.fail(f"{method}: 418 expected")
        except urllib.error.HTTPError as e:
            assert e.code == 418, e.read()
            assert e.headers["x-answered"] == method
            assert json.loads(e.read()) == {
                "method": method,
                "query": "status=418&a=1&a=2",
                "header": method,
                "body": "payload" if data else "",
            }
    req = urllib.request.Request(urls["fastapi_app"] + "/echo", method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as head:  # FastAPI's route has no HEAD
        urllib.request.urlopen(req, timeout=180)
    assert head.value.code == 405


def _read_gated(url: str, stream: str, *, sse: bool) -> list[bytes]:
    """Each part as it reaches the client; the app makes the next one only once
    the client releases this one, so a buffered response would never end."""
    got: list[bytes] = []
    with urllib.request.urlopen(f"{url}/{'sse' if sse else 'stream'}/{stream}", timeout=180) as r:
        if sse:
            assert r.headers["Content-Type"].startswith("text/event-stream")
        while True:
            line = r.readline()
            if not line:
                return got
            if line == b"\n":  # the blank line that ends an SSE event
                continue
            got.append(line)
            status, _, body = fetch(f"{url}/release/{stream}/{len(got) - 1}", b"")
            assert status == 200, body


def test_streaming_response_arrives_chunk_by_chunk(urls: dict[str, str]) -> None:
    got = _read_gated(urls["fastapi_app"], uuid.uuid4().hex, sse=False)
    assert got == [f"chunk {i}\n".encode() for i in range(10)]


def test_server_sent_events_arrive_as_produced(urls: dict[str, str]) -> None:
    got = _read_gated(urls["fastapi_app"], uuid.uuid4().hex, sse=True)
    assert got == [f"data: {i}\n".encode() for i in range(5)]


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def test_large_upload_and_download_stream(urls: dict[str, str], platform: Platform) -> None:
    gateway = platform.procs["gateway"].proc
    assert gateway is not None
    fetch(urls["fastapi_app"] + "/download?mib=1")  # warm, so that only streaming is measured
    peak_before = _peak_rss_bytes(gateway.pid)
    size = 50 << 20
    status, _, body = fetch(urls["fastapi_app"] + "/upload", b"\0" * size)
    assert status == 200, body[:500]
    assert json.loads(body) == {"size": size}
    status, _, body = fetch(urls["fastapi_app"] + "/download?mib=50")
    assert status == 200
    assert len(body) == size
    # Streamed, never whole in the gateway: its peak memory barely moves.
    assert _peak_rss_bytes(gateway.pid) - peak_before < 20 << 20


def test_a_handler_that_raises_gives_500_with_an_id_in_the_logs(
    urls: dict[str, str], platform: Platform
) -> None:
    status, headers, body = fetch(urls["fastapi_app"] + "/boom")
    assert status == 500, body
    error_id = json.loads(body)["error_id"]
    assert headers.get("x-thaw-error-id") == error_id
    _wait_for_logged(platform, error_id, "the handler broke on purpose")


def _wait_for_logged(platform: Platform, error_id: str, error: str) -> None:
    """Until `thaw app logs` shows the traceback of ``error`` under ``error_id``."""
    deadline = time.monotonic() + 60
    logs = ""
    while time.monotonic() < deadline:
        logs = thaw_cli(platform, "app", "logs", "web-guide").stdout
        if error_id in logs and error in logs:
            return
    pytest.fail(f"error id {error_id} not with its traceback in thaw app logs:\n{logs[-3000:]}")


def test_wsgi_app_answers(urls: dict[str, str], platform: Platform) -> None:
    status, _, body = past_cold_start(lambda: fetch(urls["flask_app"] + "/hello"))
    assert (status, body) == (200, b"hello from flask"), body.decode() + platform.logs()


def test_web_server_answers(urls: dict[str, str], platform: Platform) -> None:
    status, _, body = past_cold_start(lambda: fetch(urls["file_server"] + "/"))
    assert status == 200, body.decode() + platform.logs()
    assert b"Directory listing" in body


def test_a_web_server_that_never_listens_is_a_503_naming_its_port(
    urls: dict[str, str], platform: Platform
) -> None:
    def container_answer() -> tuple[int, bytes] | None:
        status, _, body = fetch(urls["silent_server"] + "/")
        # Not the gateway's 503 of a cold start: the container's, naming the port.
        return (status, body) if b"port 8001" in body else None

    status, body = eventually_blocking(
        container_answer, COLD_START_BOUND_S, "the container's answer", context=platform.logs
    )
    assert status == 503, body
    assert b"startup_timeout" in body, body


def test_unknown_endpoint_is_404(urls: dict[str, str], platform: Platform) -> None:
    status, _, _ = fetch(platform.gateway_url + "/web/web-guide/nothing-here")
    assert status == 404


def test_get_web_url_and_app_show(urls: dict[str, str], platform: Platform) -> None:
    import thaw

    assert thaw.Function.from_name("web-guide", "predict").get_web_url() == urls["predict"]
    shown = thaw_cli(platform, "app", "show", "web-guide").stdout
    assert urls["fastapi_app"] in shown


def _ws_url(url: str) -> str:
    return "ws" + url.removeprefix("http")


async def test_websocket_echoes_a_thousand_messages(urls: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(_ws_url(urls["fastapi_app"]) + "/ws") as ws:
            for i in range(1000):
                if i % 2:
                    await ws.send_bytes(b"%d" % i)
                    assert await ws.receive_bytes(timeout=60) == b"echo:%d" % i
                else:
                    await ws.send_str(str(i))
                    assert await ws.receive_str(timeout=60) == f"echo:{i}"
            await ws.close()
        # The app saw the close as a disconnect and returned: the socket is free again.
        async with session.ws_connect(_ws_url(urls["fastapi_app"]) + "/ws") as ws:
            await ws.send_str("again")
            assert await ws.receive_str(timeout=60) == "echo:again"


async def test_a_websocket_route_that_does_not_exist_is_refused(urls: dict[str, str]) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(_ws_url(urls["fastapi_app"]) + "/no-such-socket")
    assert refused.value.status == 403


async def test_a_websocket_handler_that_raises_closes_1011_with_an_id(
    urls: dict[str, str], platform: Platform
) -> None:
    url = _ws_url(urls["fastapi_app"]) + "/ws-boom"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str("go")
        closed = await ws.receive(timeout=60)
    assert closed.type is aiohttp.WSMsgType.CLOSE, closed
    assert closed.data == 1011
    error_id = re.search(r"err-[0-9a-f]+", closed.extra or "")
    assert error_id, closed.extra
    await asyncio.to_thread(
        _wait_for_logged, platform, error_id.group(0), "the socket handler broke on purpose"
    )


async def test_websocket_to_other_kinds_of_endpoint_is_refused_clearly(
    urls: dict[str, str],
) -> None:
    async with aiohttp.ClientSession() as session:
        for name in ("flask_app", "file_server", "predict"):
            async with session.get(
                urls[name], headers={"Upgrade": "websocket", "Connection": "Upgrade"}
            ) as r:
                assert r.status == 501, name
                message = (await r.json())["error"]["message"]
            assert "@thaw.asgi_app" in message and name in message, message


SERVED_APP = """
import thaw

app = thaw.App("{name}")


@app.function()
@thaw.fastapi_endpoint()
def version() -> dict:
    return {{"version": {version}}}
"""


URL_LINE = re.compile(r"^web version: (\S+)$")


# Its bounded waits (180 + 120 + 180 s on a loaded machine) add up past pytest's default 300 s.
@pytest.mark.timeout(900)
def test_thaw_serve_redeploys_on_edit_and_stops_on_ctrl_c(
    platform: Platform, tmp_path: Path
) -> None:
    name = f"served-{os.getpid()}"
    source = tmp_path / "served_app.py"
    source.write_text(SERVED_APP.format(name=name, version=1))
    env = {**os.environ, "THAW_GATEWAY_URL": platform.gateway_url, "THAW_TOKEN": platform.token}
    proc = subprocess.Popen(
        [*THAW, "serve", str(source)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(
            target=lambda: [lines.put(x) for x in proc.stdout or ()], daemon=True
        ).start()
        deadline = time.monotonic() + 180
        url, printed = "", ""
        while not url and (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            printed += line
            url = m.group(1) if (m := URL_LINE.match(line)) else ""
        assert url, "thaw serve printed no URL:\n" + printed
        status, _, body = past_cold_start(lambda: fetch(url))
        assert (status, json.loads(body)) == (200, {"version": 1}), body
        source.write_text(SERVED_APP.format(name=name, version=2))
        deadline = time.monotonic() + 120  # generous: the machine is shared
        seen: Any = None
        while time.monotonic() < deadline:
            status, _, body = fetch(url)
            seen = json.loads(body) if status == 200 else (status, body)
            if seen == {"version": 2}:
                break
        assert seen == {"version": 2}
    finally:
        proc.send_signal(signal.SIGINT)
        # Ctrl-C may land during a redeploy, whose child is stopped first; a
        # bound for a busy machine, not a timing.
        proc.wait(timeout=180)
    apps = {a["name"]: a for a in _api(platform, "/v1/apps")}
    assert apps[name]["state"] == "stopped"


def _api(platform: Platform, path: str) -> Any:
    req = urllib.request.Request(
        platform.gateway_url + path, headers={"Authorization": f"Bearer {platform.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
