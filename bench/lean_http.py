"""A minimal keep-alive HTTP/1.1 JSON client for the benchmarks' load generators.

Why: on the 2-core benchmark machine the client process shares the cores with the
nodes and Redis, so whatever CPU the client spends per request is taken from the
system it measures. A profile of `bench.lock_bench` showed aiohttp's client spending
about 400 µs of CPU per acquire+release cycle (request and response objects, payload
wrappers, timers, stdlib json), as much as the leader itself; this client sends one
prepared `write` per request and parses the answer with a few `bytes` operations.

What it supports is what the nodes answer with: `POST`/`GET` with a JSON body, one
request at a time per connection, and responses with a `Content-Length` (every node
answer has one). Anything else (chunked bodies, a closed connection) fails the request
with `ConnectionError`, which the benchmarks count as an error. Connections are pooled
per base URL and reused; a connection that failed is dropped, never reused.

No timer is armed per request (that alone costs a tenth of the budget): a benchmark
bounds a whole case instead.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast
from urllib.parse import urlsplit

import orjson

_HEAD_END = b"\r\n\r\n"


class _Connection(asyncio.Protocol):
    """One TCP connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no `asyncio.Transport` subclasses: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = self._parse()
        except ConnectionError as exc:
            waiter.set_exception(exc)
            return
        if answer is not None:
            waiter.set_result(answer)

    def _parse(self) -> tuple[int, bytes] | None:
        """(status, body) once a whole response is buffered; None while incomplete."""
        buffer = self._buffer
        end = buffer.find(_HEAD_END)
        if end < 0:
            return None
        lines = bytes(buffer[:end]).split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise ConnectionError(f"bad status line {lines[0]!r}") from None
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length < 0:
            raise ConnectionError("a response without Content-Length")
        total = end + len(_HEAD_END) + length
        if len(buffer) < total:
            return None
        body = bytes(buffer[end + len(_HEAD_END) : total])
        del buffer[:total]
        return status, body

    def send(self, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        if self.closed or self.transport is None:
            raise ConnectionError("the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return self._waiter

    def close(self) -> None:
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
