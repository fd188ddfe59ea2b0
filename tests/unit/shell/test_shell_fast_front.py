"""The fast front: hot POSTs answered below aiohttp, everything else handed to aiohttp.

A real socket on loopback, the front in front of a small aiohttp application that has
its own `POST /hot` route answering `{"via": "aiohttp"}`: an answer tells which side
served the request.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from distcluster_worker.shell.fast_front import FastFront, FrontConnections

HOT = frozenset({"/hot"})
MAX_BODY = 1024


@dataclass
class Front:
    port: int
    connections: FrontConnections
    observed: list[tuple[str, str, int]] = field(default_factory=list)
    served: list[bytes] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def front() -> AsyncIterator[Front]:
    async def via_aiohttp(request: web.Request) -> web.Response:
        return web.json_response({"via": "aiohttp", "body": (await request.read()).decode()})

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_post("/hot", via_aiohttp)
    app.router.add_get("/plain", via_aiohttp)
    app.router.add_get("/ws", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    server = runner.server
    assert server is not None
    connections = FrontConnections()
    state = Front(0, connections)

    async def serve(path: str, query: str, body: bytes) -> tuple[int, bytes]:
        state.served.append(body)
        if body == b"boom":
            raise RuntimeError("the handler failed")
        if body == b"wait":
            await state.release.wait()
        answer = {"via": "front", "path": path, "query": query, "body": body.decode()}
        return 201, json.dumps(answer).encode()

    def observe(method: str, route: str, status: int, seconds: float) -> None:
        state.observed.append((method, route, status))

    def connection() -> FastFront:
        return FastFront(
            HOT, serve, server, max_body_bytes=MAX_BODY, observe=observe, tracker=connections
        )

    listener = await asyncio.get_running_loop().create_server(connection, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    yield state
    listener.close()
    await connections.drain(1.0)
    await runner.cleanup()


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = await reader.readexactly(int(headers["content-length"]))
    return Answer(int(status_line.split()[1]), headers, json.loads(body))


async def open_conn(front: Front) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", front.port)


async def test_a_hot_post_is_answered_by_the_front(front: Front) -> None:
    reader, writer = await open_conn(front)
    writer.write(post("/hot?hops=1", b'{"a": 1}'))
    answer = await read_answer(reader)
    assert answer.status == 201
    assert answer.body == {"via": "front", "path": "/hot", "query": "hops=1", "body": '{"a": 1}'}
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["date"].endswith(" GMT")
    assert "connection" not in answer.headers  # HTTP/1.1: kept alive by default
    assert front.observed == [("POST", "/hot", 201)]
    writer.close()


async def test_one_connection_serves_many_and_hands_over_at_the_first_other_request(
    front: Front,
) -> None:
    reader, writer = await open_conn(front)
    for body in (b"1", b"2"):
        writer.write(post("/hot", body))
        assert (await read_answer(reader)).body["via"] == "front"
    writer.write(get("/plain"))
    assert (await read_answer(reader)).body == {"via": "aiohttp", "body": ""}
    # From there on the connection is aiohttp's, hot route or not.
    writer.write(post("/hot", b"3"))
    assert (await read_answer(reader)).body == {"via": "aiohttp", "body": "3"}
    assert front.served == [b"1", b"2"]
    writer.close()


async def test_pipelined_requests_are_answered_in_the_order_they_came(front: Front) -> None:
    reader, writer = await open_conn(front)
    writer.write(post("/hot", b"wait") + post("/hot", b"next") + get("/plain"))
    await asyncio.sleep(0.05)
    assert front.served == [b"wait"]  # the next ones wait for its answer
    front.release.set()
    answers = [await read_answer(reader) for _ in range(3)]
    assert [a.body.get("body") for a in answers] == ["wait", "next", ""]
    assert [a.body["via"] for a in answers] == ["front", "front", "aiohttp"]
    writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(
            b"POST /hot HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            id="chunked",
        ),
        pytest.param(post("/hot", b"abc", "Expect: 100-continue"), id="expect"),
        pytest.param(post("/hot", b"x" * (MAX_BODY + 1)), id="over-the-size-bound"),
    ],
)
async def test_hot_posts_the_front_does_not_answer_go_to_aiohttp(
    front: Front, request_bytes: bytes
) -> None:
    reader, writer = await open_conn(front)
    writer.write(request_bytes)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    if head.startswith(b"HTTP/1.1 100"):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b"Server: Python" in head  # aiohttp's answer, whatever its status
    assert front.served == []
    writer.close()


async def test_other_methods_and_paths_are_aiohttp_s(front: Front) -> None:
    reader, writer = await open_conn(front)
    writer.write(get("/hot"))
    assert (await read_answer_raw(reader)).startswith(b"HTTP/1.1 405")
    reader, writer = await open_conn(front)
    writer.write(post("/nowhere", b"{}"))
    assert (await read_answer_raw(reader)).startswith(b"HTTP/1.1 404")
    assert front.served == []


async def read_answer_raw(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def test_a_malformed_request_gets_aiohttp_s_400(front: Front) -> None:
    reader, writer = await open_conn(front)
    writer.write(b"POST /hot HTTP/1.1\r\nContent-Length: x\r\n\r\n")
    head = await read_answer_raw(reader)
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request")
    assert b"Server: Python" in head
    assert front.served == []


async def test_a_websocket_upgrade_is_handed_to_aiohttp(front: Front) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"http://127.0.0.1:{front.port}/ws") as ws,
    ):
        await ws.send_str("ping")
        assert await asyncio.wait_for(ws.receive_str(), 5) == "ping"


async def test_connection_close_is_honoured(front: Front) -> None:
    reader, writer = await open_conn(front)
    writer.write(post("/hot", b"1", "Connection: close"))
    answer = await read_answer(reader)
    assert answer.headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after the answer
    reader, writer = await open_conn(front)
    writer.write(b"POST /hot HTTP/1.0\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n2")
    assert (await read_answer(reader)).headers["connection"] == "keep-alive"
    writer.write(b"POST /hot HTTP/1.0\r\nContent-Length: 1\r\n\r\n3")
    assert (await read_answer(reader)).headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_a_failing_handler_gets_the_json_500_and_the_connection_serves_on(
    front: Front,
) -> None:
    reader, writer = await open_conn(front)
    writer.write(post("/hot", b"boom"))
    answer = await read_answer(reader)
    assert answer.status == 500
    assert answer.body["error"]["code"] == "internal"
    writer.write(post("/hot", b"after"))
    assert (await read_answer(reader)).body["body"] == "after"
    assert [o[2] for o in front.observed] == [500, 201]
    writer.close()


async def test_drain_lets_answers_in_flight_leave_then_closes(front: Front) -> None:
    reader, writer = await open_conn(front)
    writer.write(post("/hot", b"wait"))
    await asyncio.sleep(0.05)
    drain = asyncio.create_task(front.connections.drain(5.0))
    await asyncio.sleep(0.05)
    assert not drain.done()  # the request in flight holds it
    front.release.set()
    assert (await read_answer(reader)).body["body"] == "wait"
    await asyncio.wait_for(drain, 5)
    assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_a_request_too_large_for_the_front_is_aiohttp_s(front: Front) -> None:
    reader, writer = await open_conn(front)
    writer.write(post("/hot", b"{}", "X-Big: " + "a" * (MAX_BODY + 70_000)))
    head = await read_answer_raw(reader)
    assert head.split(b"\r\n")[0].endswith(b" 400 Bad Request")  # aiohttp's header limit
    assert front.served == []


async def test_idle_connections_are_closed_but_not_one_being_answered(front: Front) -> None:
    idle_reader, _ = await open_conn(front)
    busy_reader, busy_writer = await open_conn(front)
    busy_writer.write(post("/hot", b"wait"))
    await asyncio.sleep(0.05)
    assert front.connections.close_idle(idle_s=0.0) == 1
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    front.release.set()
    assert (await read_answer(busy_reader)).body["body"] == "wait"


class _Transport:
    """Just enough of a transport to drive one `FastFront` by hand."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closing = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def test_answers_wait_while_the_client_does_not_read() -> None:
    async def serve(path: str, query: str, body: bytes) -> tuple[int, bytes]:
        return 200, b"{}"

    conn = FastFront(
        HOT,
        serve,
        lambda: pytest.fail("nothing is handed over"),  # type: ignore[arg-type,return-value]
        max_body_bytes=MAX_BODY,
        observe=lambda *_: None,
        tracker=FrontConnections(),
    )
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.pause_writing()  # the socket's buffer is full
    conn.data_received(post("/hot", b"1") + post("/hot", b"2"))
    await asyncio.sleep(0.01)
    assert transport.written == []  # nothing more is written into the full buffer
    conn.resume_writing()
    await asyncio.sleep(0.01)
    assert len(transport.written) == 2
