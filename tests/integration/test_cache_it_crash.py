"""Cache faults with real processes under concurrent load: SIGKILL and SIGSTOP of a node
during writes, Redis down, capacity pressure.

The staleness check is the harness's `History.stale_reads`: each key has one sequential
writer putting "1", "2", ... through the surviving nodes, and readers on every node read
all keys in a loop; once a PUT (or a read) returned a version, no read that starts later
returns an older confirmed value or a 404. Failed PUTs (503, or no answer) have an unknown
outcome: their values are allowed anywhere; 503s on reads are allowed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from cache_it_harness import (
    LEASE_MS,
    SLOT_LEASE_MS,
    CacheCluster,
    History,
    cache_cluster,
    read_loop,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

KEYS = 6
VICTIM = "node3"


async def writer(c: CacheCluster, key: str, history: History, stop: asyncio.Event) -> None:
    nodes = itertools.cycle([n for n in c.ids if n != VICTIM])
    for n in itertools.count(1):
        if stop.is_set():
            return
        try:
            reply = await c.put(next(nodes), key, str(n), timeout_s=20)
        except (TimeoutError, aiohttp.ClientError):
            reply = None
        if reply is not None and reply.status == 200:
            history.confirmed(key, str(n), int(reply.field("version")), time.monotonic())
        else:
            history.failed_puts += 1
            await asyncio.sleep(0.05)  # the key's home is down: do not spin


async def run_under_fault(
    c: CacheCluster, fault: Callable[[], Awaitable[None]], seconds: float
) -> History:
    """Writers and readers on every node for `seconds`, `fault` run one second in."""
    keys = [f"w{i}" for i in range(KEYS)]
    history, stop = History(), asyncio.Event()
    tasks = [asyncio.create_task(writer(c, key, history, stop)) for key in keys]
    tasks += [asyncio.create_task(read_loop(c, n, keys, history, stop, 5)) for n in c.ids]
    await asyncio.sleep(1.0)
    await fault()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return history


def check(history: History) -> None:
    stale = history.stale_reads()
    assert not stale, stale[:10]
    writes = history.confirmed_writes()
    assert writes >= 5 * KEYS, (writes, history.failed_puts)
    read_nodes = {node for node, *_ in history.reads}
    assert read_nodes == {"node1", "node2", "node3"}, read_nodes


async def test_sigkill_of_a_node_during_writes(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path) as c:

        async def kill_then_restart() -> None:
            c.kill(VICTIM)
            await asyncio.sleep(5.0)  # past CACHE_DEAD_AFTER_MS: its keys move
            await c.restart(VICTIM)  # back empty; its keys move back to it

        history = await run_under_fault(c, kill_then_restart, seconds=4.0)
        check(history)
        after = [r for r in history.reads if r[0] == VICTIM and r[4] == 200]
        assert after, "the restarted node served no read"


async def test_sigstop_of_a_node_during_writes(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path) as c:

        async def pause_then_resume() -> None:
            c.pause(VICTIM)
            await asyncio.sleep(2.5 * LEASE_MS / 1000)  # its leases run out meanwhile
            c.resume(VICTIM)

        history = await run_under_fault(c, pause_then_resume, seconds=4.0)
        check(history)
        assert (await c.stats(VICTIM))["home_graces"] >= 1  # it noticed its own stall


async def test_redis_down_misses_and_writes_503_while_hits_go_on(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path) as c:
        key = c.key_homed_at("node1", prefix="held")
        other = c.key_homed_at("node1", prefix="also")  # no write touches it
        for k in (key, other):
            assert (await c.put("node1", k, "kept")).status == 200
            assert (await c.get("node2", k)).field("state") == "S"
        await asyncio.to_thread(c.redis.stop)
        down_at = time.monotonic()
        try:
            await asyncio.sleep(2 * LEASE_MS / 1000)  # renewals need no Redis
            hit = await c.get("node2", key)
            assert hit.status == 200 and hit.field("value") == "kept", hit.body
            miss = await c.get("node2", c.key_homed_at("node1", prefix="never"))
            assert miss.status == 503 and miss.code == "unavailable", miss.body
            put = await c.put("node3", key, "lost")
            assert put.status == 503 and put.code == "unavailable", put.body
            # node1 cannot renew its slot lease, so it stops renewing copies: the hits end
            # within the slot lease and a copy lease.
            await wait_for(lambda: c.get("node2", other), lambda r: r.status == 503, 10, "503")
            hits_for_s = time.monotonic() - down_at
            assert 2.0 < hits_for_s < (SLOT_LEASE_MS + LEASE_MS) / 1000 + 1.0, hits_for_s
        finally:
            await asyncio.to_thread(c.redis.start)
        put = await wait_for(
            lambda: c.put("node3", key, "back"), lambda r: r.status == 200, 10, "a PUT again"
        )
        assert put.field("value") == "back"
        for node in c.ids:
            assert (await c.get(node, key)).field("value") == "back"


async def test_capacity_and_byte_budget_hold_under_concurrent_load(tmp_path: Path) -> None:
    env = {"CACHE_CAPACITY": "4", "CACHE_MAX_BYTES": "160", "CACHE_POLICY": "lru"}
    async with cache_cluster(tmp_path, env) as c:
        keys = [f"cap{i}" for i in range(24)]
        over: list[str] = []

        async def client(node: str, offset: int) -> None:
            for i in range(60):
                key = keys[(i * 7 + offset) % len(keys)]
                if i % 4 == 0:
                    assert (await c.put(node, key, f"{node}-{i}".ljust(30, "."))).status == 200
                else:
                    assert (await c.get(node, key)).status in (200, 404)

        async def watch() -> None:
            for _ in range(20):
                for node in c.ids:
                    lines = (await c.call(node, "GET", "/cache/lines")).field("lines")
                    size = sum(line["bytes"] for line in lines)
                    if len(lines) > 4 or size > 160:
                        over.append(f"{node}: {len(lines)} lines, {size} bytes")
                await asyncio.sleep(0.05)

        await asyncio.gather(watch(), *(client(n, i) for i, n in enumerate(c.ids * 2)))
        assert not over, over
        for node in c.ids:
            stats = await c.stats(node)
            assert stats["line_count"] <= 4 and stats["bytes_used"] <= 160, stats
            assert stats["evictions"] > 0, stats
