"""The guide's "Web Endpoints" examples, plus the shapes the e2e tests check:
streaming, SSE, large bodies both ways, Flask through wsgi_app, a server in
the container through web_server, and a handler that raises."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import thaw as modal
from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

app = modal.App("web-guide")


def model(x: object) -> str:
    return f"predicted:{x}"


@app.function()
@modal.web_endpoint(method="POST")
def predict(request: dict) -> dict:
    return {"prediction": model(request["input"])}


web_app = FastAPI()


@web_app.post("/predict")
def fastapi_predict(request: dict) -> dict:
    return {"result": model(request["input"])}


# Streams that produce their next part only once the client says it has the
# previous one (``/release``): a response buffered anywhere on the way would
# never complete. One container (max_containers=1) holds both requests.
_released: dict[str, asyncio.Event] = {}


def _gate(stream: str, i: int) -> asyncio.Event:
    return _released.setdefault(f"{stream}/{i}", asyncio.Event())


@web_app.get("/stream/{stream}")
async def stream(stream: str) -> StreamingResponse:
    async def chunks():
        for i in range(10):
            yield f"chunk {i}\n"
            await _gate(stream, i).wait()

    return StreamingResponse(chunks(), media_type="text/plain")


@web_app.get("/sse/{stream}")
async def sse(stream: str) -> StreamingResponse:
    async def events():
        for i in range(5):
            yield f"data: {i}\n\n"
            await _gate(stream, i).wait()

    return StreamingResponse(events(), media_type="text/event-stream")


@web_app.post("/release/{stream}/{i}")
async def release(stream: str, i: int) -> dict:
    _gate(stream, i).set()
    return {"released": i}


@web_app.post("/upload")
async def upload(request: Request) -> dict:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return {"size": size}


@web_app.get("/download")
async def download(mib: int = 1) -> StreamingResponse:
    block = b"x" * (1 << 20)

    async def blocks():
        for _ in range(mib):
            yield block

    return StreamingResponse(blocks(), media_type="application/octet-stream")


@web_app.api_route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def echo_request(request: Request) -> Response:
    body = json.dumps(
        {
            "method": request.method,
            "query": request.url.query,
            "header": request.headers.get("x-probe"),
            "body": (await request.body()).decode(),
        }
    )
    status = int(request.query_params.get("status", "200"))
    return Response(body, status_code=status, headers={"x-answered": request.method})


@web_app.get("/boom")
def boom() -> dict:
    raise ValueError("the handler broke on purpose")


@web_app.websocket("/ws")
async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await ws.send_text("echo:" + message["text"])
            else:
                await ws.send_bytes(b"echo:" + message["bytes"])
    except WebSocketDisconnect:
        return


@web_app.websocket("/ws-boom")
async def ws_boom(ws: WebSocket) -> None:
    await ws.accept()
    await ws.receive_text()
    raise ValueError("the socket handler broke on purpose")


@app.function(max_containers=1)
@modal.concurrent(max_inputs=8)
@modal.asgi_app()
def fastapi_app() -> FastAPI:
    return web_app


# A container has thaw's runtime and what its image installs, nothing more:
# flask is asked for, as a user would.
@app.function(image=modal.Image.debian_slim().pip_install("flask"))
@modal.wsgi_app()
def flask_app():
    from flask import Flask

    flask = Flask(__name__)

    @flask.get("/hello")
    def hello() -> str:
        return "hello from flask"

    return flask


@app.function()
@modal.web_server(8000, startup_timeout=30)
def file_server() -> None:
    subprocess.Popen(
        [sys.executable, "-m", "http.server", "8000", "--bind", "127.0.0.1"], cwd="/tmp"
    )


@app.function()
@modal.web_server(8001, startup_timeout=1)
def silent_server() -> None:
    """Starts nothing: its port never listens."""
