"""The HTTP layer under ``thaw.client.Client``: one keep-alive aiohttp session
on the SDK's background loop (thaw._sync), imported only when the first
request is made; unit tests put a fake ``Transport`` in its place."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec
from thaw_core.api import ErrorBody, ErrorDetail

from thaw import exception
from thaw.client_config import ClientConfig

JSON = "application/json"


class Transport(Protocol):
    """The HTTP layer: answers ``(status, body)``; streams NDJSON lines."""

    async def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = JSON
    ) -> tuple[int, bytes]: ...

    def lines(self, method: str, path: str, body: bytes | None = None) -> AsyncIterator[bytes]:
        """The body of a 2xx answer split into lines; an error answer raises."""
        ...

    async def close(self) -> None: ...


_error_body = msgspec.json.Decoder(ErrorBody)


def gateway_error(status: int, data: bytes, *, token: str | None = None) -> exception.Error:
    try:
        detail = _error_body.decode(data).error
        code, message = detail.code, detail.message
    except msgspec.DecodeError:
        code, message = None, data.decode(errors="replace").strip() or f"HTTP {status}"
    error = exception.from_gateway(status, code, message)
    if isinstance(error, exception.AuthError) and not token:
        error = type(error)(
            f"{message} (no token: set THAW_TOKEN, or run `thaw up` on this machine for an admin token)"
        )
    return error


_DESCRIPTION = re.compile(r'error_description="([^"]*)"')


def _challenge_body(status: int, challenge: str) -> bytes:
    """An ErrorBody made of a WWW-Authenticate challenge's error_description."""
    found = _DESCRIPTION.search(challenge)
    if found is None:
        return b""
    code = "unauthorized" if status == 401 else "forbidden"
    return msgspec.json.encode(ErrorBody(error=ErrorDetail(code=code, message=found[1])))


class HttpTransport:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._headers = {"Content-Type": JSON}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            # Long polls and streams wait as long as the API says; only connecting is bounded.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            skip_auto_headers=("User-Agent",),
        )
        return self._session

    def _unreachable(self, e: Exception) -> exception.ConnectionError:
        return exception.ConnectionError(
            f"cannot reach the thaw gateway at {self.config.gateway_url} ({e}); "
            "is the platform running (`thaw up`) and THAW_GATEWAY_URL right?"
        )

    async def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = JSON
    ) -> tuple[int, bytes]:
        import aiohttp

        session = self._session or self._open()
        headers = (
            self._headers
            if content_type == JSON
            else {**self._headers, "Content-Type": content_type}
        )
        try:
            async with session.request(
                method, self.config.gateway_url + path, data=body, headers=headers
            ) as resp:
                data = await resp.read()
                if not data and resp.status in (401, 403):
                    # A HEAD answer has no body: the gateway says why in its challenge.
                    data = _challenge_body(resp.status, resp.headers.get("WWW-Authenticate", ""))
                return resp.status, data
        except aiohttp.ClientError as e:
            raise self._unreachable(e) from None

    async def lines(
        self, method: str, path: str, body: bytes | None = None
    ) -> AsyncIterator[bytes]:
        import aiohttp

        session = self._session or self._open()
        try:
            async with session.request(
                method, self.config.gateway_url + path, data=body, headers=self._headers
            ) as resp:
                if resp.status >= 300:
                    raise gateway_error(resp.status, await resp.read(), token=self.config.token)
                # Not resp.content's own line iterator: it refuses lines over 64 KiB,
                # and one result line carries a whole pickled value.
                pending = b""
                async for chunk in resp.content.iter_any():
                    pending += chunk
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        if line.strip():
                            yield line
                if pending.strip():
                    yield pending
        except aiohttp.ClientError as e:
            raise self._unreachable(e) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
