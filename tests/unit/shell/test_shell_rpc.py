"""The RPC client retries only when no HTTP answer came back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from distcluster_worker.runner.cluster import free_port
from distcluster_worker.shell.rpc import RpcClient, RpcError


class Peer:
    """A test peer counting its hits; answers with a chosen status, or slowly."""

    def __init__(self) -> None:
        self.hits = 0
        self.status = 200
        self.delay_s = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        body = await request.json() if request.can_read_body else None
        return web.json_response({"got": body}, status=self.status)


@pytest.fixture
async def peer() -> AsyncIterator[tuple[Peer, str]]:
    state = Peer()
    app = web.Application()
    app.router.add_route("*", "/rpc", state.handle)
    app.router.add_get("/text", _text)
    async with TestServer(app) as server:
        yield state, str(server.make_url("")).rstrip("/")


async def _text(request: web.Request) -> web.Response:
    return web.Response(text="not json")


@pytest.fixture
async def client() -> AsyncIterator[RpcClient]:
    rpc = RpcClient(timeout_ms=200, retries=2)
    await rpc.start()
    yield rpc
    await rpc.close()


async def test_post_and_get_return_status_and_json(
    peer: tuple[Peer, str], client: RpcClient
) -> None:
    state, url = peer
    assert await client.post_json(url, "/rpc", {"a": 1}) == (200, {"got": {"a": 1}})
    assert await client.get_json(url, "/rpc") == (200, {"got": None})
    assert await client.get_json(url, "/text") == (200, None)


async def test_http_errors_are_answers_not_retried(
    peer: tuple[Peer, str], client: RpcClient
) -> None:
    state, url = peer
    state.status = 409
    status, body = await client.post_json(url, "/rpc", {"a": 1})
    assert (status, body) == (409, {"got": {"a": 1}})
    state.status = 503
    assert (await client.post_json(url, "/rpc", {}))[0] == 503
    assert state.hits == 2


async def test_connection_refused_is_retried_then_raises() -> None:
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)

    client = RpcClient(timeout_ms=200, retries=2, sleep=fake_sleep)
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RpcError) as err:
        await client.post_json(url, "/rpc", {})
    assert err.value.attempts == 3
    assert err.value.path == "/rpc"
    assert len(sleeps) == 2 and sleeps[0] < sleeps[1] <= 0.2
    with pytest.raises(RpcError) as err:
        await client.get_json(url, "/rpc", retries=0)
    assert err.value.attempts == 1
    await client.close()


async def test_timeouts_are_retried(peer: tuple[Peer, str], client: RpcClient) -> None:
    state, url = peer
    state.delay_s = 1.0
    with pytest.raises(RpcError) as err:
        await client.post_json(url, "/rpc", {}, timeout_ms=50, retries=1)
    assert isinstance(err.value.cause, TimeoutError)
    assert state.hits == 2


def test_rpc_error_from_a_message() -> None:
    error = RpcError("node2/raft-append answered 500")
    assert str(error) == "node2/raft-append answered 500"
    assert error.cause is None
