"""The test TCP proxy against a tiny echo server: forwarding, cut, blackhole, delay, heal."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from tcp_proxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    yield port
    server.close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", echo_port) as p:
        yield p


async def _connect(proxy: TcpProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _roundtrip(proxy: TcpProxy, payload: bytes) -> bytes:
    reader, writer = await _connect(proxy)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    finally:
        writer.close()


async def _is_closed_by_peer(reader: asyncio.StreamReader, timeout_s: float = 2.0) -> bool:
    """True when the proxy ends the stream (EOF or reset) within the timeout."""
    try:
        data = await asyncio.wait_for(reader.read(1), timeout_s)
    except (ConnectionError, OSError):
        return True
    return data == b""


async def test_forwards_both_ways_and_counts(proxy: TcpProxy) -> None:
    payload = b"x" * 200_000
    assert await _roundtrip(proxy, payload) == payload
    assert proxy.stats.accepted == 1
    assert proxy.stats.bytes_up == len(payload)
    assert proxy.stats.bytes_down == len(payload)


async def test_cut_closes_open_connections_and_refuses_new(proxy: TcpProxy) -> None:
    reader, writer = await _connect(proxy)
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    proxy.cut()
    assert await _is_closed_by_peer(reader)
    writer.close()
    new_reader, new_writer = await _connect(proxy)
    new_writer.write(b"ping")
    assert await _is_closed_by_peer(new_reader)
    new_writer.close()
    assert proxy.stats.refused >= 1


async def test_blackhole_holds_new_connections_silently(proxy: TcpProxy) -> None:
    proxy.cut(blackhole=True)
    reader, writer = await _connect(proxy)
    writer.write(b"ping")
    await writer.drain()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.5)
    proxy.heal()
    # Healing drops the held connection so the client redials instead of hanging.
    assert await _is_closed_by_peer(reader)
    writer.close()
    assert proxy.stats.blackholed == 1


async def test_heal_forwards_again(proxy: TcpProxy) -> None:
    proxy.cut()
    proxy.heal()
    assert await _roundtrip(proxy, b"back") == b"back"
    assert proxy.state == "open"


async def test_delay_holds_each_direction_and_keeps_order(proxy: TcpProxy) -> None:
    proxy.delay(150)
    reader, writer = await _connect(proxy)
    start = time.monotonic()
    for i in range(20):
        writer.write(f"{i:03d}".encode())
        await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(60), 5)
    elapsed_s = time.monotonic() - start
    writer.close()
    assert data == b"".join(f"{i:03d}".encode() for i in range(20))
    assert elapsed_s >= 0.3  # 150 ms up plus 150 ms down
    assert elapsed_s < 2.0  # chunks are pipelined, not delayed one after another
    proxy.delay(0)
    start = time.monotonic()
    assert await _roundtrip(proxy, b"fast") == b"fast"
    assert time.monotonic() - start < 0.25


async def test_links_are_independent(echo_port: int) -> None:
    with TcpProxy("127.0.0.1", echo_port) as a_to_b, TcpProxy("127.0.0.1", echo_port) as b_to_a:
        a_to_b.cut()
        assert await _roundtrip(b_to_a, b"still") == b"still"
        reader, writer = await _connect(a_to_b)
        assert await _is_closed_by_peer(reader)
        writer.close()


async def test_stop_releases_the_port(echo_port: int) -> None:
    p = TcpProxy("127.0.0.1", echo_port).start()
    port = p.port
    assert await _roundtrip(p, b"one") == b"one"
    p.stop()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


def test_negative_delay_is_refused(proxy: TcpProxy) -> None:
    with pytest.raises(ValueError):
        proxy.delay(-1)
