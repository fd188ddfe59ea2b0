"""The stream store on a real Redis: consume order, redelivery with the idle-scan skip,
nack, dead letters and ack reports. The skip's clock is injected; Redis measures idle
time itself, so tests that need an entry idle past its visibility wait until Redis says
it is, and never assert on how long anything took."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from distcluster_worker.queue_role import commands as cmd
from distcluster_worker.queue_role.settings import QueueSettings
from distcluster_worker.queue_role.store import StreamStore

SCAN_MS = 100


@dataclass
class Clock:
    now_ms: int = 0

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class Env:
    store: StreamStore
    client: aioredis.Redis
    clock: Clock
    topic: str

    @property
    def stream(self) -> str:
        return self.store.keys(self.topic).stream

    async def idle_ms(self, entry_id: str, group: str = "g") -> int:
        raw = await self.store.run(
            cmd.xpending_range(self.stream, group, 1, start=entry_id, end=entry_id)
        )
        return cmd.parse_pending(raw)[0].idle_ms

    async def wait_idle(self, entry_id: str, at_least_ms: int) -> None:
        """Wait until Redis counts `entry_id` idle for `at_least_ms` (a precondition)."""
        while await self.idle_ms(entry_id) < at_least_ms:
            await asyncio.sleep(at_least_ms / 4000)


@pytest.fixture
async def env(redis_url: str) -> AsyncIterator[Env]:
    client = aioredis.Redis.from_url(redis_url)
    clock = Clock()
    settings = QueueSettings(max_deliveries=3, idle_scan_interval_ms=SCAN_MS)
    store = StreamStore(client, f"test:{uuid.uuid4().hex}:queue", settings, clock_ms=clock)
    try:
        yield Env(store, client, clock, "t")
    finally:
        await store.close()
        await client.aclose()


async def test_batches_round_trip_in_order_with_their_bodies(env: Env) -> None:
    bodies = ["plain", {"nested": {"list": [1, 2.5, None, True]}}, "ünïcödé ✓", {"q": '"],['}]
    ids, duplicate = await env.store.publish(env.topic, bodies, None)
    single, _ = await env.store.publish(env.topic, ["one"], None)
    assert not duplicate and len(ids) == 4 and len(single) == 1
    got = await env.store.consume(env.topic, "g", "c", 10, 60_000, 0)
    assert [(d.id, d.body, d.deliveries) for d in got.messages] == [
        *[(i, b, 1) for i, b in zip(ids, bodies, strict=True)],
        (single[0], "one", 1),
    ]
    acked, not_found = await env.store.ack(env.topic, "g", [*ids, ids[0], "1-1"])
    assert (acked, not_found) == (4, [ids[0], "1-1"])


async def test_an_entry_without_a_body_field_reads_as_null(env: Env) -> None:
    await env.store.ensure_group(env.stream, "g")
    await env.client.xadd(env.stream, {"other": "x"})
    got = await env.store.consume(env.topic, "g", "c", 10, 60_000, 0)
    assert [d.body for d in got.messages] == [None]


async def test_own_pending_entries_come_back_first_with_counted_deliveries(env: Env) -> None:
    ids, _ = await env.store.publish(env.topic, ["a", "b", "c"], None)
    first = await env.store.consume(env.topic, "g", "c", 2, 60_000, 0)
    assert [d.id for d in first.messages] == ids[:2]
    again = await env.store.consume(env.topic, "g", "c", 3, 60_000, 0)  # did not ack
    assert [(d.id, d.deliveries) for d in again.messages] == [(ids[0], 2), (ids[1], 2), (ids[2], 1)]


async def test_redelivery_waits_at_most_the_scan_interval_after_visibility(env: Env) -> None:
    ids, _ = await env.store.publish(env.topic, ["job"], None)
    taken = await env.store.consume(env.topic, "g", "dies", 1, 60_000, 0)
    assert [d.id for d in taken.messages] == ids
    visibility_ms = 30
    nothing = await env.store.consume(env.topic, "g", "other", 1, visibility_ms, 0)
    assert nothing.messages == []  # not idle long enough, and the scan saw everything
    await env.wait_idle(ids[0], visibility_ms)
    env.clock.now_ms = SCAN_MS - 1
    skipped = await env.store.consume(env.topic, "g", "other", 1, visibility_ms, 0)
    assert skipped.messages == []  # idle past visibility, but a scan is not due yet
    env.clock.now_ms = SCAN_MS
    redelivered = await env.store.consume(env.topic, "g", "other", 1, visibility_ms, 0)
    assert [(d.id, d.deliveries) for d in redelivered.messages] == [(ids[0], 2)]


async def test_a_scan_that_filled_its_count_does_not_hide_the_next_entries(env: Env) -> None:
    ids, _ = await env.store.publish(env.topic, ["a", "b", "c"], None)
    await env.store.consume(env.topic, "g", "dies", 3, 60_000, 0)
    await env.wait_idle(ids[-1], 10)
    got = []
    for _ in range(3):  # the same clock reading: only complete scans are trusted
        got += (await env.store.consume(env.topic, "g", "other", 1, 10, 0)).messages
        await env.store.ack(env.topic, "g", [got[-1].id])
    assert [d.id for d in got] == ids


async def test_nack_makes_entries_claimable_at_once_despite_a_recent_scan(env: Env) -> None:
    ids, _ = await env.store.publish(env.topic, ["x"], None)
    await env.store.consume(env.topic, "g", "holder", 1, 60_000, 0)
    empty = await env.store.consume(env.topic, "g", "other", 1, 60_000, 0)
    assert empty.messages == []  # this scan is now trusted for SCAN_MS
    assert await env.store.nack(env.topic, "g", ids) == (1, [])
    got = await env.store.consume(env.topic, "g", "other", 1, 60_000, 0)
    assert [(d.id, d.deliveries) for d in got.messages] == [(ids[0], 2)]


async def test_an_entry_past_max_deliveries_is_dead_lettered_not_delivered(env: Env) -> None:
    ids, _ = await env.store.publish(env.topic, [{"poison": True}], None)
    deliveries = []
    for _ in range(3):  # max_deliveries is 3; the same consumer takes it back each time
        got = await env.store.consume(env.topic, "g", "c", 1, 60_000, 0)
        deliveries += [d.deliveries for d in got.messages]
    assert deliveries == [1, 2, 3]
    last = await env.store.consume(env.topic, "g", "c", 1, 60_000, 0)
    assert last.messages == [] and last.dead_lettered == 1
    keys = env.store.keys(env.topic)
    (dead,) = await env.client.xrange(keys.dead_letters)
    fields = {k.decode(): v.decode() for k, v in dead[1].items()}
    assert fields["id"] == ids[0] and fields["b"] == '{"poison":true}'
    assert fields["reason"].startswith(cmd.DEAD_LETTER_REASON)
    stats = await env.store.stats(env.topic, 0)
    assert stats["dead_letters"] == 1 and stats["groups"][0]["pending"] == 0


async def test_blocking_consume_wakes_for_a_publish(env: Env) -> None:
    await env.store.ensure_group(env.stream, "g")
    waiting = asyncio.create_task(env.store.consume(env.topic, "g", "c", 5, 60_000, 1000))
    while not (await env.client.info("clients"))["blocked_clients"]:
        await asyncio.sleep(0.005)
    # The consume is now blocked in XREADGROUP: the publish must wake it.
    ids, _ = await env.store.publish(env.topic, ["wake"], None)
    got = await waiting
    assert [(d.id, d.body) for d in got.messages] == [(ids[0], "wake")]


async def test_idempotent_publish_returns_the_first_ids(env: Env) -> None:
    first = await env.store.publish(env.topic, ["a", "b"], "key-1")
    again = await env.store.publish(env.topic, ["a", "b"], "key-1")
    assert first == (first[0], False) and again == (first[0], True)
    assert await env.client.xlen(env.stream) == 2
