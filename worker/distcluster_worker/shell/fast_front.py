"""A lean HTTP/1.1 front for a role's hottest routes, with aiohttp behind it for the rest.

Why: on the lock manager every client cycle is two small POSTs, and the leader serves them
all. aiohttp's server spends about 35 µs of CPU per request before a handler runs
(request and response objects, routing, header writing), a third of the leader's CPU per
cycle, on the same cores the followers and Redis need. Answering `POST /lock/acquire`,
`/release` and `/renew` here instead took the leader from 171 to 104 µs of CPU per cycle
and the cluster from 4,733 to 7,004 cycles/s in the same minute (README, Performance).

How: every connection starts on `FastFront`, which parses with httptools (llhttp, the
parser uvicorn uses). A request is answered here only when it is an ordinary POST to a
hot route: a `Content-Length` body within the node's size bound, no `Transfer-Encoding`,
no `Expect`, no upgrade. `serve(path, query, body)` gives its status and JSON body.
Anything else, and the rest of its connection, is handed to aiohttp's own protocol (the
runner's `web.Server`, a protocol factory) with the bytes received from that request on,
so aiohttp answers it exactly as it would without this front: routing, 404 and 405,
413, `100-continue`, WebSocket upgrades, malformed requests.

Requests are answered in the order they came: a client that pipelines gets its answers in
order, and a request to hand over waits until the ones before it were answered. Each
request's bytes are counted off the buffer (headers up to the blank line, then
`Content-Length` bytes), so a hand-over starts exactly at its request. Reading pauses
while `PIPELINE_LIMIT` requests wait. A client that goes away does not cancel its request
(as with aiohttp's default); the answer is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple

import httptools

from distcluster_worker.shell.errors import unhandled_failure
from distcluster_worker.shell.middleware import log_request

Serve = Callable[[str, str, bytes], Awaitable[tuple[int, bytes]]]
"""(path, query string, body) -> (status, JSON body): the answer to a hot request."""
FastRoutes = tuple[frozenset[str], Serve]
"""A role's hot routes (paths of POST requests) and what answers them."""
Observe = Callable[[str, str, int, float], None]
"""(method, route, status, seconds): counts and times every request answered here."""

PIPELINE_LIMIT = 64
"""Requests of one connection waiting for their answer before reading pauses."""
DRAIN_POLL_S = 0.01
"""How often a stopping node looks whether the front's last answers left."""
HEAD_ROOM_BYTES = 64 * 1024
"""Bytes beyond the body bound one request may take before aiohttp gets it (its own
limits on request lines and headers, 8 KiB each, then answer it)."""
IDLE_TIMEOUT_S = 75.0
"""A connection that sent nothing for this long, with no answer pending, is closed
(aiohttp's keep-alive timeout)."""

_HEADER_END = b"\r\n\r\n"


class _Request(NamedTuple):
    path: str
    query: str
    body: bytes
    keep_alive: bool
    http10: bool


class FastFront(asyncio.Protocol):
    """One client connection: hot requests answered here, the rest handed to aiohttp."""

    def __init__(
        self,
        hot: frozenset[str],
        serve: Serve,
        fallback: Callable[[], asyncio.Protocol],
        *,
        max_body_bytes: int,
        observe: Observe,
        tracker: FrontConnections,
    ) -> None:
        self._hot = hot
        self._serve = serve
        self._fallback = fallback
        self._max_body_bytes = max_body_bytes
        self._observe = observe
        self._tracker = tracker
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()  # bytes from the start of the first unanswered request
        self._queue: deque[_Request] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._handing_over = False
        self._paused = False
        self._writable: asyncio.Future[None] | None = None  # set while writing is paused
        self.last_seen = time.monotonic()
        self._reset_request()

    def _reset_request(self) -> None:
        self._url = b""
        self._body: list[bytes] = []
        self._content_length: int | None = None
        self._plain = True  # no header that makes aiohttp's answer differ from ours

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no `asyncio.Transport` subclasses: no isinstance check.
        self._transport = transport  # type: ignore[assignment]
        self._tracker.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._queue.clear()
        self._tracker.discard(self)
        self.resume_writing()  # an answer waiting to be written is dropped

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None:
            if not self._writable.done():
                self._writable.set_result(None)
            self._writable = None

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        self._buf += data
        if self._handing_over:
            return  # kept for aiohttp, which gets it once the answers before it left
        if len(self._buf) > self._max_body_bytes + HEAD_ROOM_BYTES:
            self._handing_over = True  # a request too large for the front: aiohttp's
            if self._worker is None:
                self._hand_over()
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # Upgrades and malformed requests: aiohttp answers those (its 101, its 400).
            self._handing_over = True
        if self._handing_over and self._worker is None:
            self._hand_over()

    # -- httptools callbacks ---------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length":
            self._content_length = int(value) if value.isdigit() else None
        elif lowered in (b"transfer-encoding", b"expect", b"upgrade"):
            self._plain = False

    def on_headers_complete(self) -> None:
        if self._handing_over:
            return
        path = self._url.partition(b"?")[0].decode("latin-1")
        length = self._content_length
        if (
            self._parser.get_method() != b"POST"
            or path not in self._hot
            or not self._plain
            or length is None
            or length > self._max_body_bytes
        ):
            self._handing_over = True

    def on_body(self, body: bytes) -> None:
        if not self._handing_over:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._handing_over:
            return
        length = self._content_length or 0
        start = len(self._buf) - len(self._buf.lstrip(b"\r\n"))  # empty lines before it
        end = self._buf.index(_HEADER_END, start) + len(_HEADER_END) + length
        del self._buf[:end]
        path, _, query = self._url.decode("latin-1").partition("?")
        parser = self._parser
        request = _Request(
            path,
            query,
            b"".join(self._body),
            parser.should_keep_alive(),
            parser.get_http_version() == "1.0",
        )
        self._reset_request()
        self._queue.append(request)
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._answer_queued())
        if len(self._queue) >= PIPELINE_LIMIT and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()

    # -- answering -------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a request of this connection is being answered."""
        return self._worker is not None

    async def _answer_queued(self) -> None:
        try:
            while self._queue:
                request = self._queue.popleft()
                status, body = await self._answer(request)
                transport = self._transport
                if transport is None or transport.is_closing():
                    return
                if self._writable is not None:  # the client does not read: wait for it
                    await asyncio.shield(self._writable)
                    if transport.is_closing():
                        return
                transport.write(_head(status, len(body), request) + body)
                if not request.keep_alive:
                    transport.close()
                    return
                if self._paused and len(self._queue) < PIPELINE_LIMIT // 2:
                    self._paused = False
                    transport.resume_reading()
        finally:
            self._worker = None
        if self._handing_over:
            self._hand_over()

    async def _answer(self, request: _Request) -> tuple[int, bytes]:
        started = time.monotonic()
        status = 500
        try:
            status, body = await self._serve(request.path, request.query, request.body)
        except Exception as exc:  # noqa: BLE001 - the client gets the JSON 500, the log the cause
            failure = unhandled_failure("POST", request.path, exc)
            status, body = failure.status, failure.body if isinstance(failure.body, bytes) else b""
        finally:
            seconds = time.monotonic() - started
            self._observe("POST", request.path, status, seconds)
            log_request("POST", request.path, request.path, status, seconds)
        return status, body

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.resume_writing()

    def _hand_over(self) -> None:
        """Give the connection to aiohttp, with everything from the first request not
        answered here."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._tracker.discard(self)
        protocol = self._fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            transport.resume_reading()
        if self._buf:
            protocol.data_received(bytes(self._buf))
        self._buf.clear()


_STATUSES = frozenset(s.value for s in HTTPStatus)
_date_cache: tuple[int, str] = (0, "")


def _head(status: int, length: int, request: _Request) -> bytes:
    reason = HTTPStatus(status).phrase if status in _STATUSES else ""
    if not request.keep_alive:
        connection = "Connection: close\r\n"
    elif request.http10:
        connection = "Connection: keep-alive\r\n"
    else:
        connection = ""
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
        f"Date: {_http_date()}\r\n{connection}\r\n"
    ).encode("latin-1")


def _http_date() -> str:
    """The `Date` header's value, formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


class FrontConnections:
    """The connections still on the fast front: idle ones are closed, and a stopping node
    drains them."""

    def __init__(self) -> None:
        self._open: set[FastFront] = set()

    def close_idle(self, idle_s: float = IDLE_TIMEOUT_S) -> int:
        """Close the connections that sent nothing for `idle_s` and wait for no answer;
        returns how many."""
        cutoff = time.monotonic() - idle_s
        idle = [c for c in self._open if c.last_seen < cutoff and not c.busy]
        for conn in idle:
            conn.close()
        return len(idle)

    async def sweep(self, every_s: float = IDLE_TIMEOUT_S / 5) -> None:
        """Close idle connections every `every_s`, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(every_s)
            self.close_idle()

    def add(self, conn: FastFront) -> None:
        self._open.add(conn)

    def discard(self, conn: FastFront) -> None:
        self._open.discard(conn)

    async def drain(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the requests being answered, then close every
        connection still on the front."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while any(conn.busy for conn in self._open):
                    await asyncio.sleep(DRAIN_POLL_S)
        for conn in list(self._open):
            conn.close()
