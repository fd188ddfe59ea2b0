"""The stream transport's own logic: frames, bounded queues, backoff, links and inbound streams.

Links and inbound streams run over `memory_pipe` (the in-memory twin of a WebSocket), with
an injected sleep that records the backoff instead of waiting it, so nothing here depends on
how fast the machine is. The last tests put `WsConn` on real loopback WebSockets to show the
adapter's close and dead-peer detection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from distcluster_worker.lock_role.frames import Backoff, BoundedQueue, decode_frame, encode_frame
from distcluster_worker.lock_role.stream import (
    FrameConn,
    InboundStream,
    MemoryConn,
    StreamLink,
    WsConn,
    memory_pipe,
)
from distcluster_worker.lock_role.transport import StreamTransport
from distcluster_worker.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    Message,
    VoteRequest,
    WireError,
)

LOG = logging.getLogger("test.stream")


def _append(src: str = "n1", dst: str = "n2", index: int = 1) -> AppendRequest:
    entry = Entry(term=1, index=index, kind="command", data='{"op":"x"}')
    return AppendRequest(src, dst, 1, index - 1, 1 if index > 1 else 0, (entry,), index - 1)


def _reply(src: str = "n2", dst: str = "n1", index: int = 1) -> AppendResponse:
    return AppendResponse(src, dst, 1, True, match_index=index)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Let the loop run until `condition` holds (bounded by turns, not by time)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


# -- frames ---------------------------------------------------------------------------------


def test_a_frame_round_trips_messages_in_order() -> None:
    messages: list[Message] = [_append(index=1), VoteRequest("n1", "n2", 2, 1, 1, True)]
    assert decode_frame(encode_frame(messages), "n1") == messages


def test_a_frame_is_the_body_raft_append_takes() -> None:
    body = orjson.loads(encode_frame([_append()]))
    assert list(body) == ["messages"] and body["messages"][0]["type"] == "AppendRequest"


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1, 2]", b'{"messages": 3}', b'{"messages": [{"type": "Nope"}]}'],
)
def test_a_malformed_frame_is_refused(payload: bytes) -> None:
    with pytest.raises(WireError):
        decode_frame(payload, "n1")


def test_a_frame_cannot_speak_for_another_node() -> None:
    with pytest.raises(WireError, match="carries a message from 'n3'"):
        decode_frame(encode_frame([_append(src="n3")]), "n1")


def test_bounded_queue_forgets_the_oldest_and_counts_them() -> None:
    queue = BoundedQueue(2)
    for index in (1, 2, 3):
        queue.put(_append(index=index))
    assert [m.prev_log_index for m in queue.take() if isinstance(m, AppendRequest)] == [1, 2]
    assert queue.dropped == 1 and len(queue) == 0


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.05, 0.3)
    assert [backoff.next_delay_s() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next_delay_s() == 0.05
    for _ in range(1000):  # the exponent stops growing; no overflow
        backoff.next_delay_s()
    assert backoff.next_delay_s() == 0.3


# -- StreamLink over memory pipes ----------------------------------------------------------------


class Dialer:
    """A `Connect` that fails `failures` times, then hands out memory pipes."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.remote_ends: list[MemoryConn] = []

    async def __call__(self) -> FrameConn:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionRefusedError("refused")
        local, remote = memory_pipe()
        self.remote_ends.append(remote)
        return local

    @property
    def remote(self) -> MemoryConn:
        return self.remote_ends[-1]


class Sleeps:
    """An injected sleep: records the delay and only yields to the loop."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


@pytest.fixture
async def link_parts() -> AsyncIterator[
    Callable[..., Awaitable[tuple[StreamLink, Dialer, Sleeps, list[Message]]]]
]:
    tasks: list[asyncio.Task[None]] = []

    async def make(
        failures: int = 0, queue_limit: int = 256, buffer_limit_bytes: int = 1024
    ) -> tuple[StreamLink, Dialer, Sleeps, list[Message]]:
        dialer, sleeps, delivered = Dialer(failures), Sleeps(), []
        link = StreamLink(
            "n2",
            dialer,
            on_replies=delivered.extend,
            log=LOG,
            backoff=Backoff(0.05, 0.4),
            queue_limit=queue_limit,
            buffer_limit_bytes=buffer_limit_bytes,
            sleep=sleeps,
        )
        tasks.extend(link.start())
        return link, dialer, sleeps, delivered

    yield make
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_link_sends_what_queued_before_it_connected_as_one_frame(link_parts) -> None:  # type: ignore[no-untyped-def]
    link, dialer, _, _ = await link_parts()
    link.enqueue(_append(index=1))
    link.enqueue(_append(index=2))
    await _until(lambda: bool(dialer.remote_ends) and len(link._outbox) == 0, "a flush")
    frame = await dialer.remote.receive()
    assert frame is not None and len(decode_frame(frame, "n1")) == 2
    assert (link.stats.frames_sent, link.stats.messages_sent) == (1, 2)


async def test_link_delivers_replies_read_from_the_connection(link_parts) -> None:  # type: ignore[no-untyped-def]
    link, dialer, _, delivered = await link_parts()
    await _until(lambda: link.connected, "a connection")
    await dialer.remote.send(encode_frame([_reply(index=1), _reply(index=2)]))
    await _until(lambda: len(delivered) == 2, "two replies delivered")
    assert link.stats.frames_received == 1


async def test_link_redials_with_a_doubling_backoff_then_resets_it(link_parts) -> None:  # type: ignore[no-untyped-def]
    link, dialer, sleeps, _ = await link_parts(failures=4)
    await _until(lambda: link.connected, "a connection after four refusals")
    assert sleeps.delays == [0.05, 0.1, 0.2, 0.4]
    assert (link.stats.connect_failures, link.stats.connects) == (4, 1)
    await dialer.remote.close()  # the peer goes away: redial after the base delay again
    await _until(lambda: link.stats.connects == 2, "a second connection")
    assert sleeps.delays[-1] == 0.05 and link.stats.disconnects == 1


async def test_link_drops_a_batch_while_the_write_buffer_is_over_its_bound(link_parts) -> None:  # type: ignore[no-untyped-def]
    link, dialer, _, _ = await link_parts(buffer_limit_bytes=1024)
    await _until(lambda: link.connected, "a connection")
    local = dialer.remote.peer
    assert local is not None
    local.buffered = 4096  # a stalled peer left this much unsent
    link.enqueue(_append(index=1))
    await _until(lambda: link.stats.dropped_when_full == 1, "the batch dropped")
    assert local.sent == [] and link.dropped == 1
    local.buffered = 0  # drained: the next batch goes out
    link.enqueue(_append(index=2))
    await _until(lambda: link.stats.frames_sent == 1, "the next batch sent")


async def test_enqueue_never_blocks_and_memory_stays_bounded_on_a_stalled_link(link_parts) -> None:  # type: ignore[no-untyped-def]
    link, dialer, _, _ = await link_parts(queue_limit=8)
    await _until(lambda: link.connected, "a connection")
    local = dialer.remote.peer
    assert local is not None
    local.stall()  # the socket stops taking bytes: the writer task waits in send
    link.enqueue(_append(index=1))
    await _until(lambda: len(link._outbox) == 0, "the writer took the first batch")
    for index in range(2, 102):
        link.enqueue(_append(index=index))  # returns at once every time
    assert link.queued == 8 and link.dropped == 100 - 8
    local.stall(False)
    await _until(lambda: link.stats.frames_sent == 2, "the stalled frame and the newest eight")
    assert link.stats.messages_sent == 1 + 8


async def test_link_drops_a_connection_that_carries_a_bad_frame(link_parts) -> None:  # type: ignore[no-untyped-def]
    link, dialer, _, delivered = await link_parts()
    await _until(lambda: link.connected, "a connection")
    await dialer.remote.send(encode_frame([_reply(src="n3")]))  # n2's link must not speak for n3
    await _until(lambda: link.stats.disconnects == 1, "the connection dropped")
    assert delivered == []
    await _until(lambda: link.stats.connects == 2, "a fresh connection")


# -- InboundStream -------------------------------------------------------------------------------


class Stepper:
    """A stand-in for `RaftDriver.receive` that can be held and made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[Message]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    async def __call__(self, messages: list[Message]) -> list[Message]:
        self.batches.append(messages)
        await self.release.wait()
        if self.fail:
            raise ConnectionError("Redis is down")
        return [
            _reply(index=m.prev_log_index + 1) for m in messages if isinstance(m, AppendRequest)
        ]


async def test_inbound_steps_frames_that_arrive_while_busy_as_one_batch() -> None:
    stepper = Stepper()
    remote, local = memory_pipe()
    stream = InboundStream(local, "n1", stepper, log=LOG)
    task = asyncio.create_task(stream.run())
    stepper.release.clear()
    await remote.send(encode_frame([_append(index=1)]))
    await _until(lambda: len(stepper.batches) == 1, "the first batch stepping")
    for index in (2, 3, 4):
        await remote.send(encode_frame([_append(index=index)]))
    await _until(lambda: stream.stats.frames_received == 4, "three more frames read")
    stepper.release.set()
    await _until(lambda: len(stepper.batches) == 2, "the rest stepped together")
    assert [len(b) for b in stepper.batches] == [1, 3]
    replies = [decode_frame(await remote.receive() or b"", "n2") for _ in range(2)]
    assert [len(r) for r in replies] == [1, 3]  # answered on the connection they came on
    await remote.close()
    await asyncio.wait_for(task, 5)


async def test_inbound_keeps_serving_after_a_failed_step() -> None:
    stepper = Stepper()
    remote, local = memory_pipe()
    task = asyncio.create_task(InboundStream(local, "n1", stepper, log=LOG).run())
    stepper.fail = True
    await remote.send(encode_frame([_append(index=1)]))
    await _until(lambda: len(stepper.batches) == 1, "the failing step")
    stepper.fail = False
    await remote.send(encode_frame([_append(index=2)]))
    reply = await remote.receive()
    assert reply is not None and decode_frame(reply, "n2") == [_reply(index=2)]
    await remote.close()
    await asyncio.wait_for(task, 5)


async def test_inbound_closes_a_connection_that_speaks_for_another_node() -> None:
    stepper = Stepper()
    remote, local = memory_pipe()
    task = asyncio.create_task(InboundStream(local, "n1", stepper, log=LOG).run())
    await remote.send(encode_frame([_append(src="n3")]))
    await asyncio.wait_for(task, 5)
    assert local.closed and stepper.batches == []


# -- WsConn on real loopback WebSockets ----------------------------------------------------------


async def _ws_server(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> TestServer:
    app = web.Application()
    app.router.add_get("/ws", handler)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_ws_conn_carries_binary_frames_both_ways_and_sees_the_close() -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = WsConn(ws)
        while (payload := await conn.receive()) is not None:
            await conn.send(payload[::-1])
        return ws

    server = await _ws_server(echo)
    async with aiohttp.ClientSession() as session:
        conn = WsConn(await session.ws_connect(server.make_url("/ws")))
        await conn.send(b"abc")
        assert await conn.receive() == b"cba"
        assert conn.buffered_bytes() == 0
        await conn.close()
        assert await conn.receive() is None
    await server.close()


def test_ws_conn_reads_the_write_buffer_of_any_transport() -> None:
    """uvloop's transports are not `asyncio.WriteTransport`s: the check must still work."""

    class Transport:  # no asyncio base class, as uvloop.loop.TCPTransport
        def get_write_buffer_size(self) -> int:
            return 12345

    class Writer:
        transport = Transport()

    class Ws:
        _writer = Writer()

    assert WsConn(Ws()).buffered_bytes() == 12345  # type: ignore[arg-type]
    assert WsConn(object()).buffered_bytes() == 0  # type: ignore[arg-type]


async def test_ws_conn_gives_up_on_a_peer_that_stops_answering_pings() -> None:
    """A frozen peer (no pong) ends the connection: `receive` returns None, then a redial."""
    frozen = asyncio.Event()

    async def deaf(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        await frozen.wait()  # never reads, so never answers a ping
        return ws

    server = await _ws_server(deaf)
    async with aiohttp.ClientSession() as session:
        conn = WsConn(await session.ws_connect(server.make_url("/ws"), heartbeat=0.05))
        assert await asyncio.wait_for(conn.receive(), 30) is None
    frozen.set()
    await server.close()


# -- StreamTransport's endpoint ------------------------------------------------------------------


async def test_endpoint_answers_frames_and_closes_a_peers_stale_stream() -> None:
    transport = StreamTransport(
        "n2", {"n1": "http://unused", "n3": "http://unused"}, dead_after_s=5, tick_s=0.05, log=LOG
    )
    stepper = Stepper()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await transport.serve(request, stepper)

    app = web.Application()
    app.router.add_get("/raft-stream", handler)
    server = TestServer(app)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        stranger = await session.get(server.make_url("/raft-stream?src=mallory"))
        assert stranger.status == 403
        first = WsConn(await session.ws_connect(server.make_url("/raft-stream?src=n1")))
        await first.send(encode_frame([_append(index=1)]))
        reply = await first.receive()
        assert reply is not None and decode_frame(reply, "n2") == [_reply(index=1)]
        second = WsConn(await session.ws_connect(server.make_url("/raft-stream?src=n1")))
        assert await asyncio.wait_for(first.receive(), 30) is None  # the stale one is closed
        await second.send(encode_frame([_append(index=2)]))
        assert await second.receive() is not None
        assert [s.src for s in transport.inbound] == ["n1"]
        await transport.close_inbound()
        assert await asyncio.wait_for(second.receive(), 30) is None
    await server.close()
    await transport.close()
