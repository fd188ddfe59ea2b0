"""A lean keep-alive HTTP/1.1 JSON client for the benchmarks' load generators.

Why: on the 2-core benchmark machine the client process shares the cores with the
nodes and Redis, so whatever CPU the client spends per request is taken from the
system it measures. A profile of `bench.lock_bench` showed aiohttp's client spending
about 400 µs of CPU per acquire+release cycle (request and response objects, payload
wrappers, timers, stdlib json), as much as the leader itself. This client sends one
prepared `write` per request and lets `httptools` (llhttp, the parser uvicorn uses)
parse the answers: the only Python calls per response are the body and completion
callbacks.

One request at a time per connection; connections are pooled per base URL and reused
while the server keeps them alive. A connection that failed or that the server closes
fails its request with `ConnectionError` (the benchmarks count it as an error) and is
never reused.

No timer is armed per request (that alone costs a tenth of the budget): a benchmark
bounds a whole case instead.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast
from urllib.parse import urlsplit

import httptools
import orjson


class _Connection(asyncio.Protocol):
    """One TCP connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no `asyncio.Transport` subclasses: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP response: {exc}"))
            self.close()

    # httptools callbacks (only the ones defined here are called)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        self._body = []
        if not self._parser.should_keep_alive():
            self.closed = True  # answered, but not reusable
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), body))

    def _fail(self, exc: ConnectionError) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def send(self, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        if self.closed or self.transport is None:
            raise ConnectionError("the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class LeanHttp:
    """Pooled keep-alive connections to any number of base URLs (`http://host:port`)."""

    def __init__(self) -> None:
        self._idle: dict[str, list[_Connection]] = {}
        self._all: set[_Connection] = set()

    async def post(self, base_url: str, path: str, body: Any) -> tuple[int, Any]:
        """POST `body` as JSON; (status, decoded JSON answer). ConnectionError on failure."""
        return await self.request("POST", base_url, path, orjson.dumps(body))

    async def request(
        self, method: str, base_url: str, path: str, payload: bytes = b""
    ) -> tuple[int, Any]:
        conn = await self._acquire(base_url)
        host = base_url.split("://", 1)[-1]
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        )
        try:
            status, raw = await conn.send(head.encode() + payload)
        except BaseException:
            self._drop(conn)
            raise
        if conn.closed:
            self._drop(conn)
        else:
            self._idle.setdefault(base_url, []).append(conn)
        return status, orjson.loads(raw) if raw else None

    async def _acquire(self, base_url: str) -> _Connection:
        idle = self._idle.get(base_url)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
            self._all.discard(conn)
        parts = urlsplit(base_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"{base_url!r} is not http://host:port")
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_Connection, parts.hostname, parts.port)
        self._all.add(conn)
        return conn

    def _drop(self, conn: _Connection) -> None:
        self._all.discard(conn)
        conn.close()

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._all.clear()
        self._idle.clear()
