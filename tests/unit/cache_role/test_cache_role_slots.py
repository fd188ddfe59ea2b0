"""The slot round script and the fenced write on a real Redis, held to the in-memory twin.

Random rounds of three nodes (random wanted slots, known and forgotten tenures) run on
Redis and on `InMemorySlots` side by side: every answer must be the same, and so must the
fenced write's verdict. Expiry is shown apart (a real lease of 300 ms running out).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from distcluster_worker.cache_role.slots import SlotLeases, key_slot
from distcluster_worker.cache_role.store import CacheStore
from distcluster_worker.coherence import InMemorySlots, Outcome, SlotTable

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


def leases(redis: aioredis.Redis, prefix: str, node: str, lease_ms: int) -> SlotLeases:
    table = SlotTable(node, lease_ms=lease_ms, copy_lease_ms=100)
    return SlotLeases(redis, prefix, table, Clock())


async def test_rounds_answer_as_the_in_memory_twin_does(redis: aioredis.Redis) -> None:
    prefix = f"t:{uuid.uuid4().hex}"
    rng = random.Random(5)
    nodes = {n: leases(redis, prefix, n, 60_000) for n in ("a", "b", "c")}
    twin = InMemorySlots(60_000)
    twin_tables = {n: SlotTable(n, lease_ms=60_000, copy_lease_ms=100) for n in nodes}
    store = CacheStore(redis, f"{prefix}:v")
    outcomes: set[Outcome] = set()
    for _ in range(60):
        node = rng.choice(sorted(nodes))
        wanted = frozenset(s for s in range(6) if rng.random() < 0.5)
        if rng.random() < 0.1:  # a restart: the node forgets its tenures
            nodes[node] = leases(redis, prefix, node, 60_000)
            twin_tables[node] = SlotTable(node, lease_ms=60_000, copy_lease_ms=100)
        sent = twin_tables[node].plan(wanted, 0)
        expected = twin.run(node, sent, 0)
        twin_tables[node].answered(sent, expected, 0)
        await nodes[node].round(wanted)
        for slot, _ in sent.want:
            assert nodes[node].table.tenure(slot) == twin_tables[node].tenure(slot)
            assert nodes[node].table.holder(slot, 0) == twin_tables[node].holder(slot, 0)
        outcomes |= {a.outcome for a in expected}
        key = next(f"k{i}" for i in range(10_000) if key_slot(f"k{i}") in range(6))
        fence = nodes[node].fence(key)
        if fence is not None:
            landed = await store.write(key, "x", fence) is not None
            tenure = nodes[node].table.tenure(key_slot(key))
            assert landed == twin.fenced(key_slot(key), node, tenure, 0)
    assert outcomes == set(Outcome)


async def test_a_slot_runs_out_in_redis_and_a_write_under_it_no_longer_lands(
    redis: aioredis.Redis,
) -> None:
    prefix = f"t:{uuid.uuid4().hex}"
    a, b = leases(redis, prefix, "a", 300), leases(redis, prefix, "b", 300)
    store = CacheStore(redis, f"{prefix}:v")
    key = "k1"
    slot = key_slot(key)
    changes = await a.round(frozenset({slot}))
    assert changes.acquired == (slot,)
    fence = a.fence(key)
    assert fence is not None and await store.write(key, "v1", fence) == 1
    assert (await b.round(frozenset({slot}))).acquired == ()
    assert b.holder(key) == "a"
    await asyncio.sleep(0.4)  # a never renewed: its slot ran out in Redis
    assert (await b.round(frozenset({slot}))).acquired == (slot,)
    assert await store.write(key, "late", fence) is None  # a's late write lands nowhere
    assert await store.read(key) == ("v1", 1)
    released = await b.round(frozenset())
    assert released.acquired == () and await redis.get(b.slot_key(slot)) is None
