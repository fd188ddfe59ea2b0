"""The benchmarks' HTTP client: answers, keep-alive reuse, and failures as ConnectionError."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from bench.lean_http import LeanHttp


def make_app(peers: set[object]) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.json()
        return web.json_response({"got": body}, status=int(body.get("status", 200)))

    async def closing(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return web.json_response({"bye": True}, headers={"Connection": "close"})

    async def big(request: web.Request) -> web.Response:
        return web.json_response({"blob": "x" * 300_000})

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_post("/closing", closing)
    app.router.add_get("/big", big)
    app.router.add_get("/empty", empty)
    return app


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, set[object]]]:
    peers: set[object] = set()
    srv = TestServer(make_app(peers), host="127.0.0.1")
    await srv.start_server()
    try:
        yield srv, peers
    finally:
        await srv.close()


@pytest.fixture
async def http() -> AsyncIterator[LeanHttp]:
    client = LeanHttp()
    try:
        yield client
    finally:
        client.close()


def base(srv: TestServer) -> str:
    return f"http://127.0.0.1:{srv.port}"


async def test_answers_keep_one_connection_alive(
    server: tuple[TestServer, set[object]], http: LeanHttp
) -> None:
    srv, peers = server
    for i in range(5):
        assert await http.post(base(srv), "/echo", {"n": i}) == (200, {"got": {"n": i}})
    status, answer = await http.post(base(srv), "/echo", {"status": 409})
    assert (status, answer) == (409, {"got": {"status": 409}})
    assert len(peers) == 1  # every request rode the same kept-alive connection


async def test_concurrent_requests_each_get_their_own_answer(
    server: tuple[TestServer, set[object]], http: LeanHttp
) -> None:
    srv, _ = server
    answers = await asyncio.gather(*(http.post(base(srv), "/echo", {"n": i}) for i in range(20)))
    assert answers == [(200, {"got": {"n": i}}) for i in range(20)]


async def test_large_and_empty_bodies(
    server: tuple[TestServer, set[object]], http: LeanHttp
) -> None:
    srv, _ = server
    status, answer = await http.request("GET", base(srv), "/big")
    assert status == 200 and answer == {"blob": "x" * 300_000}  # many reads, one answer
    assert await http.request("GET", base(srv), "/empty") == (204, None)


async def test_a_connection_the_server_closes_is_not_reused(
    server: tuple[TestServer, set[object]], http: LeanHttp
) -> None:
    srv, peers = server
    assert await http.post(base(srv), "/closing", {}) == (200, {"bye": True})
    assert await http.post(base(srv), "/closing", {}) == (200, {"bye": True})
    assert len(peers) == 2


async def test_a_server_that_is_gone_fails_with_connection_error(http: LeanHttp) -> None:
    peers: set[object] = set()
    srv = TestServer(make_app(peers), host="127.0.0.1")
    await srv.start_server()
    url = base(srv)
    assert (await http.post(url, "/echo", {}))[0] == 200
    await srv.close()
    with pytest.raises(ConnectionError):
        await http.post(url, "/echo", {})
