"""Peer calls: many calls on one socket, answered in any order; failures become RpcError."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from distcluster_worker.shell.errors import ApiError
from distcluster_worker.shell.peer_calls import (
    PEER_CALLS_PATH,
    PeerCalls,
    PeerCallServer,
    decode_answer,
    decode_call,
    encode_answer,
    encode_call,
)
from distcluster_worker.shell.rpc import RpcError


class Peer:
    """A serving node: echoes the body, after `delay` seconds named by the path."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.release = asyncio.Event()
        self.server = PeerCallServer(self.dispatch, heartbeat_s=5)

    async def dispatch(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.calls.append((path, body))
        if path == "/hold":
            await self.release.wait()
        if path.startswith("/sleep/"):
            await asyncio.sleep(float(path.rsplit("/", 1)[1]))
        if path == "/refuse":
            raise ApiError(409, "conflict", "refused", reason="test")
        if path == "/crash":
            raise RuntimeError("a bug in a handler")
        return (201 if path == "/created" else 200), body


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, str]]:
    node = Peer()
    app = web.Application()
    app.router.add_get(PEER_CALLS_PATH, node.server.serve)
    server = TestServer(app)
    await server.start_server()
    try:
        yield node, str(server.make_url("")).rstrip("/")
    finally:
        node.release.set()
        await node.server.close(grace_s=1)
        await server.close()


def test_frames_round_trip_and_reject_truncation() -> None:
    assert decode_call(encode_call(7, "/queue/publish", b'{"a":1}')) == (
        7,
        "/queue/publish",
        b'{"a":1}',
    )
    assert decode_answer(encode_answer(2**40, 503, b"{}")) == (2**40, 503, b"{}")
    with pytest.raises(ValueError):
        decode_call(encode_call(1, "/long/path", b"")[:12])
    with pytest.raises(ValueError):
        decode_answer(b"\x00\x01")


async def test_calls_share_one_socket_and_get_their_own_answers(peer: tuple[Peer, str]) -> None:
    node, url = peer
    calls = PeerCalls(connect_timeout_s=2)
    try:
        slow = asyncio.create_task(calls.call(url, "/sleep/0.2", b"slow", timeout_s=5))
        fast = await calls.call(url, "/created", b"fast", timeout_s=5)
        assert fast == (201, b"fast")
        assert not slow.done()  # answered out of order, each to its own caller
        assert await slow == (200, b"slow")
        answers = await asyncio.gather(
            *(calls.call(url, "/echo", str(i).encode(), timeout_s=5) for i in range(50))
        )
        assert answers == [(200, str(i).encode()) for i in range(50)]
        assert len(calls._links) == 1
    finally:
        await calls.close()


async def test_no_answer_in_time_is_an_rpc_error(peer: tuple[Peer, str]) -> None:
    node, url = peer
    calls = PeerCalls(connect_timeout_s=2)
    try:
        with pytest.raises(RpcError, match="no answer"):
            await calls.call(url, "/hold", b"", timeout_s=0.1)
        node.release.set()
        assert await calls.call(url, "/echo", b"x", timeout_s=5) == (200, b"x")
    finally:
        await calls.close()


async def test_nobody_listening_is_an_rpc_error() -> None:
    calls = PeerCalls(connect_timeout_s=0.5)
    try:
        with pytest.raises(RpcError, match="cannot connect"):
            await calls.call("http://127.0.0.1:9", "/echo", b"", timeout_s=1)
    finally:
        await calls.close()


async def test_a_closing_server_finishes_calls_in_flight_and_runs_no_new_one(
    peer: tuple[Peer, str],
) -> None:
    node, url = peer
    calls = PeerCalls(connect_timeout_s=2)
    try:
        held = asyncio.create_task(calls.call(url, "/hold", b"h", timeout_s=5))
        while not node.calls:
            await asyncio.sleep(0.01)
        closing = asyncio.create_task(node.server.close(grace_s=5))
        await asyncio.sleep(0.05)
        late = asyncio.create_task(calls.call(url, "/echo", b"late", timeout_s=5))
        await asyncio.sleep(0.05)
        node.release.set()
        assert await held == (200, b"h")
        await closing
        with pytest.raises(RpcError):
            await late
        assert [path for path, _ in node.calls] == ["/hold"]  # the late call never ran
    finally:
        await calls.close()


async def test_a_broken_socket_is_dialled_again(peer: tuple[Peer, str]) -> None:
    node, url = peer
    calls = PeerCalls(connect_timeout_s=2)
    try:
        assert await calls.call(url, "/echo", b"1", timeout_s=5) == (200, b"1")
        await next(iter(calls._links.values())).ws.close()
        await asyncio.sleep(0.05)
        assert await calls.call(url, "/echo", b"2", timeout_s=5) == (200, b"2")
    finally:
        await calls.close()


async def test_a_refusal_or_a_failure_is_a_json_error_and_the_socket_serves_on(
    peer: tuple[Peer, str],
) -> None:
    _, url = peer
    calls = PeerCalls(connect_timeout_s=2)
    try:
        status, body = await calls.call(url, "/refuse", b"", timeout_s=5)
        assert status == 409
        assert orjson.loads(body) == {
            "error": {"code": "conflict", "message": "refused", "reason": "test"}
        }
        status, body = await calls.call(url, "/crash", b"", timeout_s=5)
        assert status == 500 and orjson.loads(body)["error"]["code"] == "internal"
        assert await calls.call(url, "/echo", b"still", timeout_s=5) == (200, b"still")
    finally:
        await calls.close()
