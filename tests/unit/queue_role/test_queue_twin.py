"""The in-memory twin keeps the Redis adapter's observable behaviour: the same random
histories of publish, consume, ack, nack, stats and trim give the same answers on both
(ids compared by publish order, since Redis ids come from its own clock)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from itertools import count
from typing import Any

import pytest
import redis.asyncio as aioredis

from distcluster_worker.queue_role.memory_store import InMemoryStreamStore
from distcluster_worker.queue_role.settings import QueueSettings
from distcluster_worker.queue_role.store import StreamStorage, StreamStore

SETTINGS = QueueSettings(max_deliveries=3, maxlen=6, idle_scan_interval_ms=100)
VISIBILITY_MS = 60_000  # nothing times out during a test: only nack makes entries idle


class Names:
    """Maps each side's entry ids to publish order, so answers can be compared."""

    def __init__(self) -> None:
        self.order: dict[str, int] = {}

    def learn(self, ids: list[str]) -> None:
        for entry_id in ids:
            self.order[entry_id] = len(self.order)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return f"#{self.order[value]}" if value in self.order else value
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        return value


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[StreamStore]:
    client = aioredis.Redis.from_url(redis_url)
    ticks = count(step=1_000)  # the idle-scan skip never hides a nacked entry
    store = StreamStore(
        client, f"test:{uuid.uuid4().hex}:queue", SETTINGS, clock_ms=lambda: next(ticks)
    )
    try:
        yield store
    finally:
        await store.close()
        await client.aclose()


async def step(store: StreamStorage, names: Names, op: tuple[Any, ...]) -> Any:
    kind, *args = op
    if kind == "publish":
        ids, duplicate = await store.publish("t", args[0], args[1])
        if not duplicate:
            names.learn(ids)
        return names([ids, duplicate])
    if kind == "consume":
        group, consumer, most = args
        got = await store.consume("t", group, consumer, most, VISIBILITY_MS, 0)
        return names([[(m.id, m.body, m.deliveries) for m in got.messages], got.dead_lettered])
    if kind == "stats":
        stats = await store.stats("t", 0)
        for group in stats["groups"]:
            del group["consumers"], group["oldest_pending_age_ms"]  # see the twin's docstring
        return names(stats)
    if kind == "trim":
        return await store.trim("t")
    ids = [next((k for k, v in names.order.items() if v == i), "1-1") for i in args[1]]
    answer = await (store.ack if kind == "ack" else store.nack)("t", args[0], ids)
    return names(answer)


def random_op(rng: random.Random, published: int) -> tuple[Any, ...]:
    roll = rng.random()
    group = rng.choice(["g", "h"])
    if roll < 0.25 or not published:
        bodies = [{"n": rng.randrange(100)} if rng.random() < 0.5 else "s"]
        key = rng.choice([None, None, "k1", "k2"])
        return ("publish", bodies * rng.randint(1, 4), key)
    if roll < 0.55:
        return ("consume", group, rng.choice(["a", "b"]), rng.randint(1, 4))
    ids = rng.sample(range(published + 1), k=min(published + 1, rng.randint(1, 3)))
    if roll < 0.8:
        return ("ack", group, ids)
    if roll < 0.9:
        return ("nack", group, ids)
    return ("trim",) if roll < 0.95 else ("stats",)


@pytest.mark.parametrize("seed", range(6))
async def test_random_histories_answer_the_same_on_redis_and_the_twin(
    redis_store: StreamStore, seed: int
) -> None:
    twin = InMemoryStreamStore(SETTINGS, clock_ms=lambda: 1_000)
    rng = random.Random(seed)
    names_redis, names_twin = Names(), Names()
    for i in range(120):
        op = random_op(rng, len(names_redis.order))
        on_redis = await step(redis_store, names_redis, op)
        on_twin = await step(twin, names_twin, op)
        assert on_redis == on_twin, f"seed {seed}, step {i}: {op}"
    final = ("stats",)
    assert await step(redis_store, names_redis, final) == await step(twin, names_twin, final)


async def test_the_twin_blocks_until_a_publish_or_block_ms() -> None:
    twin = InMemoryStreamStore(SETTINGS, clock_ms=lambda: 1_000)
    assert (await twin.consume("t", "g", "c", 5, VISIBILITY_MS, 10)).messages == []
    import asyncio

    waiting = asyncio.create_task(twin.consume("t", "g", "c", 5, VISIBILITY_MS, 5_000))
    await asyncio.sleep(0)
    ids, _ = await twin.publish("t", ["wake"], None)
    assert [(m.id, m.body) for m in (await waiting).messages] == [(ids[0], "wake")]
    twin.down = True
    with pytest.raises(ConnectionError):
        await twin.ping()
