"""Faults on 3 real queue nodes: redelivery after the visibility timeout, dead letters,
SIGKILL of a node under load (every publish answered 200 is consumed), ring leave and
rejoin within the bound, and a Redis restart with AOF that loses no acknowledged publish."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from lock_it_harness import wait_for
from queue_it_harness import DEAD_AFTER_S, QueueCluster, queue_cluster, topic_owned_by

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
async def q3(tmp_path: Path) -> AsyncIterator[QueueCluster]:
    async with queue_cluster(tmp_path, {"QUEUE_MAX_DELIVERIES": "3"}) as cluster:
        yield cluster


async def test_redelivery_after_visibility_then_dead_letter(q3: QueueCluster) -> None:
    assert (await q3.publish("node1", "jobs", "poison")).status == 200
    seen = []
    for attempt in range(3):  # a consumer that takes it and dies, three times
        reply = await wait_for(
            lambda a=attempt: q3.consume("node2", "jobs", "g", f"dies-{a}", visibility_ms=200),
            lambda r: r.status == 200 and bool(r.field("messages")),
            5,
            "a redelivery",
        )
        seen.append(reply.field("messages")[0]["deliveries"])
    assert seen == [1, 2, 3]
    await asyncio.sleep(0.3)
    reply = await q3.consume("node3", "jobs", "g", "last", visibility_ms=200)
    assert reply.status == 200 and reply.field("messages") == []
    stats = (await q3.call("node1", "GET", "/queue/jobs/stats")).body
    assert stats["dead_letters"] == 1 and stats["groups"][0]["pending"] == 0, stats
    owner = await q3.owner("node1", "jobs")  # it served every consume
    metrics = (await q3.call(owner, "GET", "/metrics")).body
    assert "distcluster_queue_dead_lettered_total 1.0" in metrics


async def test_sigkill_under_load_loses_nothing_and_the_node_rejoins(q3: QueueCluster) -> None:
    owners = {f"load-{i}": await q3.owner("node1", f"load-{i}") for i in range(40)}
    victim = "node3"
    topic = topic_owned_by(owners, victim)  # the victim owns it: forwarding must fail over
    accepted: set[str] = set()
    consumed: set[str] = set()
    stop = asyncio.Event()

    async def produce(node: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                reply = await q3.publish(
                    node,
                    topic,
                    f"{node}-{n}",
                )
            except (TimeoutError, aiohttp.ClientError):
                continue
            if reply.status == 200:
                accepted.add(f"{node}-{n}")

    async def consume(node: str, drain_until: float) -> None:
        while not stop.is_set() or time.monotonic() < drain_until:
            try:
                reply = await q3.consume(
                    node, topic, "g", f"c-{node}", max=20, visibility_ms=500, block_ms=50
                )
                if reply.status != 200:
                    continue
                msgs = reply.field("messages")
                consumed.update(m["body"] for m in msgs)
                if msgs:
                    await q3.ack(node, topic, "g", [m["id"] for m in msgs])
            except (TimeoutError, aiohttp.ClientError):
                continue
            if stop.is_set() and accepted <= consumed:
                return

    producers = [asyncio.create_task(produce(n)) for n in ("node1", "node2")]
    await asyncio.sleep(0.5)
    q3.kill(victim)
    started = time.monotonic()
    await q3.wait_ring(["node1", "node2"], timeout_s=DEAD_AFTER_S + 2)
    assert time.monotonic() - started <= DEAD_AFTER_S + 1.5
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*producers)
    deadline = time.monotonic() + 10
    await asyncio.gather(*(consume(n, deadline) for n in ("node1", "node2")))
    assert len(accepted) > 20 and accepted <= consumed, accepted - consumed

    await q3.restart(victim)
    await q3.wait_ring(q3.ids, timeout_s=5)
    assert await q3.owner("node1", topic) == victim
    assert (await q3.publish("node1", topic, "after")).field("owner") == victim


async def test_redis_restart_with_aof_keeps_acknowledged_publishes(q3: QueueCluster) -> None:
    ids = []
    for i in range(20):
        reply = await q3.publish(q3.ids[i % 3], "durable", {"n": i})
        assert reply.status == 200
        ids.extend(reply.field("ids"))
    await asyncio.to_thread(q3.redis.restart)
    reply = await wait_for(
        lambda: q3.consume("node2", "durable", "g", "c", max=100),
        lambda r: r.status == 200,
        15,
        "consume after the Redis restart",
        interval_s=0.2,
    )
    assert [m["id"] for m in reply.field("messages")] == ids
    await asyncio.to_thread(q3.redis.stop)
    try:
        down = await q3.publish("node1", "durable", "x")
        assert down.status == 503 and down.code == "unavailable", down
    finally:
        await asyncio.to_thread(q3.redis.start)
    ok = await wait_for(
        lambda: q3.publish("node3", "durable", "back"), lambda r: r.status == 200, 15, "recovery"
    )
    assert ok.field("ids")
