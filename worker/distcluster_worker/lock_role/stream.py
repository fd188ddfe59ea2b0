"""Raft messages over one long-lived WebSocket per directed peer link (`RAFT_TRANSPORT=stream`).

Why: with an HTTP request per batch of Raft messages, a profile of a loaded leader showed a
quarter of its CPU in the aiohttp client (request set-up, headers, response parsing) and its
followers paying an aiohttp server request per AppendEntries. A standing connection costs one
frame header per batch instead.

Shape, chosen so the stream behaves like the HTTP transport it replaces:

* Node A opens one connection to each peer B (`StreamLink`: `GET /raft-stream?src=A`,
  upgraded to a WebSocket) and writes its requests (votes, appends, snapshots) on it. B
  steps each batch and writes its replies back on that same connection (`InboundStream`),
  as an HTTP response would, so a one-way cut of A->B silences A's requests and B's answers
  to them, exactly as it did with HTTP.
* Frames are fire-and-forget: nothing waits for an answer, and anything lost is sent again
  by Raft itself (heartbeats, probes), so no frame is ever retried here.
* The driver is never blocked: it only puts messages into a bounded queue (the oldest are
  forgotten when full). One writer task per link takes everything queued and writes it as
  one frame. A batch that meets a write buffer over `buffer_limit_bytes` (a stalled peer)
  is dropped rather than buffered, and aiohttp's own flow control pauses the writer task
  (never the driver) when the socket stops draining.
* Dead links: both ends ping after `dead_after_s` without receiving anything and drop the
  connection when no pong follows within half that (aiohttp's heartbeat), so a frozen or
  blackholed peer is noticed within 1.5 x `dead_after_s`; a handshake that does not finish
  within `dead_after_s` fails. The link then redials with a doubling backoff.

The connection is behind the small `FrameConn` protocol; `WsConn` adapts both ends of an
aiohttp WebSocket, and tests use an in-memory twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiohttp
from aiohttp import web

from distcluster_worker.lock_role.frames import (
    Backoff,
    BoundedQueue,
    LinkStats,
    decode_frame,
    encode_frame,
)
from distcluster_worker.raft.messages import Message, WireError

STREAM_PATH = "/raft-stream"
QUEUE_LIMIT = 256
"""Messages waiting for one link (or one incoming connection) before the oldest go."""
BUFFER_LIMIT_BYTES = 256 * 1024
"""Write buffer of one connection past which new batches are dropped, not buffered."""
MAX_FRAME_BYTES = 64 * 1024 * 1024
"""Largest frame either end accepts: room for an InstallSnapshot of a large lock table."""

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]
Receive = Callable[[list[Message]], Awaitable[list[Message]]]
"""Step messages from one peer and return the replies to it (`RaftDriver.receive`)."""

_CLOSED = (
    aiohttp.WSMsgType.CLOSE,
    aiohttp.WSMsgType.CLOSING,
    aiohttp.WSMsgType.CLOSED,
    aiohttp.WSMsgType.ERROR,
)


class FrameConn(Protocol):
    """One open connection carrying binary frames both ways."""

    async def send(self, payload: bytes) -> None: ...

    async def receive(self) -> bytes | None:
        """The next frame's payload; None once the connection is closed."""
        ...

    def buffered_bytes(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        ...

    async def close(self) -> None: ...


Connect = Callable[[], Awaitable[FrameConn]]


class WsConn:
    """`FrameConn` over either end of an aiohttp WebSocket."""

    def __init__(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        # aiohttp has no public accessor for a WebSocket's transport; its frame writer
        # holds it. Duck-typed, as uvloop's transports are no `asyncio.WriteTransport`.
        # Without it the buffer check is skipped, and aiohttp's flow control (which
        # pauses the writer task, never the driver) still bounds the buffer.
        transport = getattr(getattr(ws, "_writer", None), "transport", None)
        self._buffer_size: Callable[[], int] | None = getattr(
            transport, "get_write_buffer_size", None
        )

    async def send(self, payload: bytes) -> None:
        await self._ws.send_bytes(payload)

    async def receive(self) -> bytes | None:
        msg = await self._ws.receive()
        if msg.type is aiohttp.WSMsgType.BINARY:
            data: bytes = msg.data
            return data
        if msg.type in _CLOSED:
            return None
        raise WireError(f"unexpected {msg.type.name} frame on a Raft stream")

    def buffered_bytes(self) -> int:
        return self._buffer_size() if self._buffer_size is not None else 0

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()


class StreamLink:
    """The outgoing half of one directed link: queue, (re)connect, write, read replies."""

    def __init__(
        self,
        peer: str,
        connect: Connect,
        *,
        on_replies: Callable[[list[Message]], None],
        log: Log,
        backoff: Backoff,
        queue_limit: int = QUEUE_LIMIT,
        buffer_limit_bytes: int = BUFFER_LIMIT_BYTES,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.peer = peer
        self.stats = LinkStats()
        self.connected = False
        self._connect = connect
        self._on_replies = on_replies
        self._log = log
        self._backoff = backoff
        self._buffer_limit_bytes = buffer_limit_bytes
        self._sleep = sleep
        self._outbox = BoundedQueue(queue_limit)
        self._wakeup = asyncio.Event()
        self._failing = False

    @property
    def queued(self) -> int:
        return len(self._outbox)

    @property
    def dropped(self) -> int:
        """Messages forgotten: pushed out of a full queue or refused by a full buffer."""
        return self._outbox.dropped + self.stats.dropped_when_full

    def enqueue(self, msg: Message) -> None:
        """Queue `msg` for the peer; never blocks (see the module docstring)."""
        self._outbox.put(msg)
        self._wakeup.set()

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.run(), name=f"raft-stream-{self.peer}")]

    async def run(self) -> None:
        """Connect, serve until the connection fails, wait a backoff, repeat; forever."""
        while True:
            conn = await self._dial()
            if conn is not None:
                try:
                    await self._serve(conn)
                finally:
                    self.connected = False
                    self.stats.disconnects += 1
                    await conn.close()
            await self._sleep(self._backoff.next_delay_s())

    async def _dial(self) -> FrameConn | None:
        try:
            conn = await self._connect()
        except Exception as exc:  # noqa: BLE001 - any failure to dial means "try later"
            self.stats.connect_failures += 1
            if not self._failing:
                self._failing = True
                self._log.warning("peer unreachable", extra={"peer": self.peer, "error": repr(exc)})
            return None
        if self._failing:
            self._failing = False
            self._log.info("peer reachable again", extra={"peer": self.peer})
        self.stats.connects += 1
        self.connected = True
        self._backoff.reset()
        return conn

    async def _serve(self, conn: FrameConn) -> None:
        """Write and read until either side of the connection fails."""
        self._wakeup.set()  # flush whatever queued while disconnected
        tasks = [
            asyncio.create_task(self._write(conn), name=f"raft-stream-{self.peer}-write"),
            asyncio.create_task(self._read(conn), name=f"raft-stream-{self.peer}-read"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        error = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
        self._log.info(
            "raft stream closed", extra={"peer": self.peer, "error": repr(error) if error else None}
        )

    async def _write(self, conn: FrameConn) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch = self._outbox.take()
            if not batch:
                continue
            if conn.buffered_bytes() > self._buffer_limit_bytes:
                self.stats.dropped_when_full += len(batch)
                continue
            await conn.send(encode_frame(batch))
            self.stats.frames_sent += 1
            self.stats.messages_sent += len(batch)

    async def _read(self, conn: FrameConn) -> None:
        while True:
            payload = await conn.receive()
            if payload is None:
                return
            messages = decode_frame(payload, self.peer)
            self.stats.frames_received += 1
            if messages:
                self._on_replies(messages)


class InboundStream:
    """The incoming half of one directed link: step the peer's frames, answer on the link.

    Frames that arrive while the previous batch is being stepped (and persisted) are
    stepped together next, so a busy follower writes Redis once for many appends.
    """

    def __init__(
        self,
        conn: FrameConn,
        src: str,
        receive: Receive,
        *,
        log: Log,
        queue_limit: int = QUEUE_LIMIT,
        buffer_limit_bytes: int = BUFFER_LIMIT_BYTES,
    ) -> None:
        self.src = src
        self.stats = LinkStats()
        self._conn = conn
        self._receive = receive
        self._log = log
        self._buffer_limit_bytes = buffer_limit_bytes
        self._inbox = BoundedQueue(queue_limit)
        self._arrived = asyncio.Event()
        self._failing = False

    @property
    def dropped(self) -> int:
        return self._inbox.dropped + self.stats.dropped_when_full

    async def run(self) -> None:
        """Serve until the connection closes or carries something malformed."""
        tasks = [
            asyncio.create_task(self._read(), name=f"raft-inbound-{self.src}-read"),
            asyncio.create_task(self._answer(), name=f"raft-inbound-{self.src}-answer"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._conn.close()
        for task in done:
            if not task.cancelled() and isinstance(task.exception(), WireError):
                self._log.warning(
                    "bad frame on a raft stream; connection dropped",
                    extra={"peer": self.src, "error": str(task.exception())},
                )

    async def _read(self) -> None:
        while True:
            payload = await self._conn.receive()
            if payload is None:
                return
            self._inbox.extend(decode_frame(payload, self.src))
            self.stats.frames_received += 1
            self._arrived.set()

    async def _answer(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            batch = self._inbox.take()
            if not batch:
                continue
            replies = await self._step(batch)
            if not replies:
                continue
            if self._conn.buffered_bytes() > self._buffer_limit_bytes:
                self.stats.dropped_when_full += len(replies)
                continue
            await self._conn.send(encode_frame(replies))
            self.stats.frames_sent += 1
            self.stats.messages_sent += len(replies)

    async def _step(self, batch: list[Message]) -> list[Message]:
        """The replies to `batch`; none when stepping failed (Raft sends it again)."""
        try:
            replies = await self._receive(batch)
        except Exception as exc:  # noqa: BLE001 - a Redis outage; log its start only
            if not self._failing:
                self._failing = True
                self._log.warning(
                    "stepping a raft stream batch failed",
                    extra={"peer": self.src, "error": repr(exc)},
                )
            return []
        self._failing = False
        return replies


class MemoryConn:
    """The in-memory twin of `WsConn`: one end of a `memory_pipe`, for tests.

    `buffered` stands in for the write buffer a stalled peer leaves behind, and `stall()`
    makes `send` hang as a full socket would, so tests can drive both without sockets.
    """

    def __init__(self) -> None:
        self.peer: MemoryConn | None = None
        self.closed = False
        self.buffered = 0
        self.sent: list[bytes] = []
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._unstalled = asyncio.Event()
        self._unstalled.set()

    def stall(self, stalled: bool = True) -> None:
        if stalled:
            self._unstalled.clear()
        else:
            self._unstalled.set()

    async def send(self, payload: bytes) -> None:
        await self._unstalled.wait()
        if self.closed or self.peer is None or self.peer.closed:
            raise ConnectionResetError("the memory pipe is closed")
        self.sent.append(payload)
        self.peer._inbox.put_nowait(payload)

    async def receive(self) -> bytes | None:
        if self.closed:
            return None
        return await self._inbox.get()

    def buffered_bytes(self) -> int:
        return self.buffered

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._inbox.put_nowait(None)
        if self.peer is not None and not self.peer.closed:
            self.peer._inbox.put_nowait(None)


def memory_pipe() -> tuple[MemoryConn, MemoryConn]:
    """Two connected `MemoryConn` ends: what one sends, the other receives."""
    a, b = MemoryConn(), MemoryConn()
    a.peer, b.peer = b, a
    return a, b
