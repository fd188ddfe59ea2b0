"""Retention on 3 real queue nodes: past QUEUE_MAXLEN a stream loses only entries that
every consumer group has acknowledged, never one still pending or not yet read by some
group. The owner trims after each ack (QUEUE_TRIM_INTERVAL_MS=0), before answering it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from queue_it_harness import QueueCluster, queue_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

RETENTION_ENV = {"QUEUE_MAXLEN": "5", "QUEUE_TRIM_INTERVAL_MS": "0"}


@pytest.fixture
async def q3(tmp_path: Path) -> AsyncIterator[QueueCluster]:
    async with queue_cluster(tmp_path, RETENTION_ENV) as cluster:
        yield cluster


async def length(q3: QueueCluster) -> int:
    return int((await q3.call("node3", "GET", "/queue/kept/stats")).field("length"))


async def take(q3: QueueCluster, group: str, consumer: str, most: int) -> list[dict[str, Any]]:
    reply = await q3.consume("node2", "kept", group, consumer, max=most, visibility_ms=60_000)
    assert reply.status == 200, reply
    return list(reply.field("messages"))


async def ack(q3: QueueCluster, group: str, ids: list[str]) -> None:
    reply = await q3.ack("node1", "kept", group, ids)
    assert reply.status == 200 and reply.field("acked") == len(ids), reply


async def test_trimming_drops_only_what_every_group_acked(q3: QueueCluster) -> None:
    body = {"topic": "kept", "messages": [{"n": i} for i in range(20)]}
    published = await q3.call("node1", "POST", "/queue/publish", body)
    ids = published.field("ids")
    assert published.status == 200 and len(ids) == 20

    assert [m["id"] for m in await take(q3, "slow", "s", 3)] == ids[:3]  # pending in "slow"
    assert [m["id"] for m in await take(q3, "fast", "f", 20)] == ids
    await ack(q3, "fast", ids[:10])
    assert await length(q3) == 20  # "slow" still holds the oldest three

    await ack(q3, "slow", ids[:3])
    assert await length(q3) == 17  # acked by both groups: gone; the rest is kept

    rest = await take(q3, "slow", "s", 20)
    assert [(m["id"], m["body"]) for m in rest] == [(i, {"n": n}) for n, i in enumerate(ids)][3:]
    await ack(q3, "slow", ids[3:])
    assert await length(q3) == 10  # "fast" still has ids[10:] pending, above QUEUE_MAXLEN

    nack = {"topic": "kept", "group": "fast", "ids": ids[10:]}
    assert (await q3.call("node3", "POST", "/queue/nack", nack)).status == 200
    again = await take(q3, "fast", "other", 20)
    assert [(m["id"], m["body"], m["deliveries"]) for m in again] == [
        (i, {"n": n}, 2) for n, i in enumerate(ids) if n >= 10
    ]
    await ack(q3, "fast", ids[10:])
    assert await length(q3) == 0
