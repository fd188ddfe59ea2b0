"""Queue API on 3 real nodes: publish/consume/ack through every node and across
forwarding, idempotent publish, ring lookups, stats, and bad input answered with 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from queue_it_harness import QueueCluster, queue_cluster, topic_owned_by

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
async def q3(tmp_path: Path) -> AsyncIterator[QueueCluster]:
    async with queue_cluster(tmp_path) as cluster:
        yield cluster


async def test_every_node_serves_every_topic_through_forwarding(q3: QueueCluster) -> None:
    owners = {f"topic-{i}": await q3.owner("node1", f"topic-{i}") for i in range(30)}
    assert set(owners.values()) == set(q3.ids), owners
    for node in q3.ids:
        assert {t: await q3.owner(node, t) for t in owners} == owners  # one ring everywhere
    published: dict[str, str] = {}
    for owner in q3.ids:
        topic = topic_owned_by(owners, owner)
        for node in q3.ids:  # the owner itself and both forwarding nodes
            reply = await q3.publish(node, topic, {"from": node, "to": owner})
            assert reply.status == 200, reply
            assert reply.field("owner") == owner
            (entry_id,) = reply.field("ids")
            published[entry_id] = topic
    for owner in q3.ids:
        topic = topic_owned_by(owners, owner)
        for i, node in enumerate(q3.ids):
            reply = await q3.consume(node, topic, "g", f"c{i}", max=1)
            assert reply.status == 200, reply
            (msg,) = reply.field("messages")
            assert published.pop(msg["id"]) == topic and msg["deliveries"] == 1
            assert msg["body"]["to"] == owner
            acked = await q3.ack(q3.ids[(i + 1) % 3], topic, "g", [msg["id"]])
            assert acked.status == 200 and acked.field("acked") == 1, acked
    assert published == {}
    stats = await q3.call("node2", "GET", f"/queue/{topic_owned_by(owners, 'node1')}/stats")
    assert stats.status == 200 and stats.field("owner") == "node1"
    assert stats.field("length") == 3 and stats.field("groups")[0]["pending"] == 0


async def test_batches_groups_idempotency_and_ack_reports(q3: QueueCluster) -> None:
    body = {"topic": "orders", "messages": ["a", {"b": 2}, "c"], "idempotency_key": "k-1"}
    first = await q3.call("node1", "POST", "/queue/publish", body)
    again = await q3.call("node3", "POST", "/queue/publish", body)
    assert first.status == again.status == 200, (first, again)
    assert again.field("ids") == first.field("ids") and again.field("duplicate") is True
    for group in ("billing", "shipping"):  # each group gets every message
        got = await q3.consume("node2", "orders", group, "w", max=10)
        assert [m["body"] for m in got.field("messages")] == ["a", {"b": 2}, "c"]
    ids = first.field("ids")
    reply = await q3.ack("node1", "orders", "billing", [ids[0], ids[0], "1-1"])
    assert reply.status == 200, reply
    assert reply.field("acked") == 1 and reply.field("not_found") == [ids[0], "1-1"]
    nack = await q3.call(
        "node3", "POST", "/queue/nack", {"topic": "orders", "group": "shipping", "ids": [ids[1]]}
    )
    assert nack.status == 200 and nack.field("nacked") == 1, nack
    other = await q3.consume("node1", "orders", "shipping", "other", max=10, visibility_ms=60000)
    assert [(m["id"], m["deliveries"]) for m in other.field("messages")] == [(ids[1], 2)]
    stats = (await q3.call("node1", "GET", "/queue/orders/stats")).body
    pending = {g["name"]: g["pending"] for g in stats["groups"]}
    assert pending == {"billing": 2, "shipping": 3} and stats["length"] == 3


BAD_BODIES = [
    ("/queue/publish", {"topic": "bad topic!", "message": "x"}),
    ("/queue/publish", {"topic": "t" * 201, "message": "x"}),
    ("/queue/publish", {"topic": "t", "message": 5}),
    ("/queue/publish", {"topic": "t", "message": None}),
    ("/queue/publish", {"topic": "t", "message": "x", "messages": ["y"]}),
    ("/queue/publish", {"topic": "t", "messages": []}),
    ("/queue/publish", {"topic": "t", "message": "x", "extra": 1}),
    ("/queue/consume", {"topic": "t", "group": "g", "consumer": "c", "max": "5"}),
    ("/queue/consume", {"topic": "t", "group": "g", "consumer": "c", "max": 0}),
    ("/queue/consume", {"topic": "t", "group": "g", "consumer": "c", "block_ms": 999999}),
    ("/queue/consume", {"topic": "t", "group": "", "consumer": "c"}),
    ("/queue/ack", {"topic": "t", "group": "g", "ids": ["not-an-id"]}),
    ("/queue/ack", {"topic": "t", "group": "g", "ids": []}),
    ("/queue/nack", {"topic": "t", "group": "g"}),
]


async def test_bad_input_gets_4xx_json_and_the_node_keeps_serving(q3: QueueCluster) -> None:
    for path, body in BAD_BODIES:
        reply = await q3.call("node1", "POST", path, body)
        assert reply.status == 400 and reply.code in ("bad_request", "bad_json"), (body, reply)
    for raw in ("{", "[1]", '"x"'):
        reply = await q3.call("node2", "POST", "/queue/publish", data=raw)
        assert reply.status == 400 and reply.code == "bad_json", reply
    huge = {"topic": "t", "message": "x" * 70000}
    assert (await q3.call("node3", "POST", "/queue/publish", huge)).status == 413
    assert (await q3.call("node1", "GET", "/queue/bad%20topic/stats")).status == 400
    assert (await q3.call("node1", "GET", "/ring?topic=no/pe")).status == 400
    assert (await q3.call("node1", "GET", "/queue/t/stats")).field("length") == 0
    for node in q3.ids:
        assert (await q3.publish(node, "t", "still fine")).status == 200
