"""The queue's own Redis connections: replies never cross between commands, a Redis
restart costs no failed command, a stopped Redis fails fast, scripts survive a flush."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from distcluster_worker.queue_role.lanes import Lanes, LuaScript
from distcluster_worker.runner.redis_server import RedisServer


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A Redis of this test's own, since the tests restart and stop it."""
    server = RedisServer(data_dir=tmp_path / "redis", appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def lanes(redis_url: str) -> AsyncIterator[Lanes]:
    client = aioredis.Redis.from_url(redis_url)
    lanes = Lanes(client.connection_pool)
    try:
        yield lanes
    finally:
        await lanes.close()
        await client.aclose()


async def test_a_cancelled_command_never_leaves_its_reply_to_the_next(lanes: Lanes) -> None:
    key = "lanes:test:list"
    await lanes.execute("DEL", key)
    waiting = asyncio.create_task(lanes.execute("BLPOP", key, 5))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert lanes.idle == 0  # its connection was closed, not reused
    await lanes.execute("RPUSH", key, "for-nobody")
    assert await lanes.execute("ECHO", "mine") == b"mine"
    assert await lanes.execute("LPOP", key) == b"for-nobody"


async def test_an_error_reply_keeps_the_connection_and_its_order(lanes: Lanes) -> None:
    await lanes.execute("SET", "lanes:test:string", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await lanes.execute("LPUSH", "lanes:test:string", "y")
    assert lanes.idle == 1
    assert await lanes.execute("GET", "lanes:test:string") == b"x"


async def test_concurrent_commands_each_get_their_own_reply(lanes: Lanes) -> None:
    replies = await asyncio.gather(*(lanes.execute("ECHO", str(i)) for i in range(50)))
    assert replies == [str(i).encode() for i in range(50)]


async def test_scripts_load_themselves_again_after_a_flush(lanes: Lanes) -> None:
    script = LuaScript("return ARGV[1] .. KEYS[1]")
    assert await lanes.script(script, ["k"], ["v"]) == b"vk"
    await lanes.execute("SCRIPT", "FLUSH")
    assert await lanes.script(script, ["k"], ["w"]) == b"wk"


async def test_a_redis_restart_fails_no_command_and_a_stopped_redis_fails_fast(
    own_redis: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(own_redis.url)
    lanes = Lanes(client.connection_pool)
    try:
        await asyncio.gather(*(lanes.execute("PING") for _ in range(5)))
        assert lanes.idle >= 1
        await asyncio.to_thread(own_redis.restart)
        assert await lanes.execute("PING") == b"PONG"  # stale connections dropped, retried
        await asyncio.to_thread(own_redis.stop)
        with pytest.raises(RedisConnectionError):
            await lanes.execute("PING")
        await asyncio.to_thread(own_redis.start)
        assert await lanes.execute("PING") == b"PONG"
    finally:
        await lanes.close()
        await client.aclose()


async def test_a_redis_that_stops_answering_fails_a_command_within_the_bound(
    redis_url: str, mute_redis_url: str
) -> None:
    """Lanes bound each command by the client's socket timeout themselves (their
    connections carry none): a Redis that takes a command and never answers fails it
    instead of hanging the node, and that connection is not used again."""
    mute = aioredis.Redis.from_url(mute_redis_url, socket_timeout=0.2)
    lanes = Lanes(mute.connection_pool)
    try:
        async with asyncio.timeout(5):
            with pytest.raises(TimeoutError):
                await lanes.execute("PING")
        assert lanes.idle == 0
    finally:
        await lanes.close()
        await mute.aclose()
    real = aioredis.Redis.from_url(redis_url, socket_timeout=0.2)
    lanes = Lanes(real.connection_pool)
    try:
        assert await lanes.execute("PING") in (b"PONG", "PONG", True)
        assert lanes.idle == 1
    finally:
        await lanes.close()
        await real.aclose()
