"""The cache grows from 3 to 5 nodes and shrinks back to 3 under concurrent traffic.

On every live node a writer puts unique values into a handful of shared keys and a
reader reads them all in a loop, while node4 and node5 join (only the registry makes them
known) and then stop gracefully (SIGTERM), one at a time. Keys change homes at every step,
so every step is a moment where an old and a new home could both think they serve a key.

The check is the shared `History.stale_reads`: once a PUT returned version v (or a read
returned it), no read that starts afterwards, on any node, returns an older value or a
404. Traffic must go on through every step (writes confirmed after each change), the
joined nodes must serve reads themselves, and a node that left must never be taken back
on a ring (its clients go on until it is gone, so it drains their requests while beating
its peers).

Every wait is a condition with a generous deadline: the machine is shared.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from pathlib import Path

import aiohttp
import pytest
from cache_it_harness import CacheCluster, History, cache_cluster, read_loop, wait_for
from lock_it_harness import rejoins_logged

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

KEYS = [f"scale{i}" for i in range(10)]
CHANGES = (("join", "node4"), ("join", "node5"), ("leave", "node5"), ("leave", "node4"))
RING_WAIT_S = 30.0
WRITES_PER_STEP = 40


async def writer(c: CacheCluster, node: str, history: History, stop: asyncio.Event) -> None:
    rng = random.Random(node)
    for n in itertools.count(1):
        if stop.is_set():
            return
        key, value = rng.choice(KEYS), f"{node}-{n}"
        try:
            reply = await c.put(node, key, value, timeout_s=20)
        except (TimeoutError, aiohttp.ClientError):
            reply = None
        if reply is not None and reply.status == 200:
            history.confirmed(key, value, int(reply.field("version")), time.monotonic())
        else:
            history.failed_puts += 1
            await asyncio.sleep(0.05)  # the key's home is changing or gone: do not spin
        await asyncio.sleep(rng.uniform(0, 0.02))


class Clients:
    """One writer and one reader per node, started and stopped with the node."""

    def __init__(self, c: CacheCluster, history: History) -> None:
        self.c = c
        self.history = history
        self.running: dict[str, tuple[asyncio.Event, list[asyncio.Task[None]]]] = {}

    def start(self, node: str) -> None:
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(writer(self.c, node, self.history, stop)),
            asyncio.create_task(read_loop(self.c, node, KEYS, self.history, stop)),
        ]
        self.running[node] = (stop, tasks)

    async def stop(self, node: str) -> None:
        stop, tasks = self.running.pop(node)
        stop.set()
        await asyncio.gather(*tasks)

    async def stop_all(self) -> None:
        for node in list(self.running):
            await self.stop(node)


async def confirmed_writes_grow(history: History, by: int, what: str) -> None:
    start = history.confirmed_writes()
    await wait_for(
        lambda: asyncio.sleep(0.1, result=history.confirmed_writes() - start),
        lambda n: n >= by,
        60.0,
        what,
    )


async def test_cache_grows_to_five_and_back_to_three_without_stale_reads(
    tmp_path: Path,
) -> None:
    async with cache_cluster(tmp_path, {"DISCOVERY_INTERVAL_MS": "200"}) as c:
        history = History()
        clients = Clients(c, history)
        for node in c.ids:
            clients.start(node)
        await confirmed_writes_grow(history, WRITES_PER_STEP, "writes before any change")
        for change, node in CHANGES:
            if change == "join":
                await c.add_node(node)
                clients.start(node)
            else:
                # Its clients go on until it is gone: it drains what they sent it.
                await asyncio.to_thread(c.nodes[node].stop)
                await clients.stop(node)
                await c.remove_node(node)
            await c.wait_ring(RING_WAIT_S)
            await confirmed_writes_grow(history, WRITES_PER_STEP, f"writes after {change} {node}")
        await clients.stop_all()
        stale = history.stale_reads()
        assert not stale, stale[:10]
        assert not rejoins_logged(tmp_path / "logs")  # a node that left stayed out
        served = {node for node, _, _, _, status, _ in history.reads if status == 200}
        assert served >= {"node1", "node2", "node3", "node4", "node5"}, served
        print(
            f"\nconfirmed writes {history.confirmed_writes()}, failed {history.failed_puts}, "
            f"reads {len(history.reads)}, read errors {history.errors}"
        )
