"""The queue grows from 3 to 5 nodes and shrinks back to 3 under traffic.

Producers publish and consumers consume and ack through every node, over many topics,
while node4 and node5 join (only the registry makes them known) and then stop
gracefully (SIGTERM), one at a time. What must hold:

* every publish answered 200 is consumed and acked at least once, and at the end no group
  of any topic has anything pending;
* duplicates come only from entries in flight: no entry is delivered by a consume that
  started after an ack of it returned, and no publish is stored twice (every publish
  carries an idempotency key, so a forwarded publish whose answer was lost is not);
* a join moves at most 1/n + 5% of topics (n members after it), all to the joiner; a
  leave moves exactly the leaver's topics (read with ``GET /ring?topic=`` before and
  after, on a sample of topics larger than the ones with traffic);
* hand-over: entries that a topic's old owner delivered and that were never acked (a
  consumer of group ``h`` takes them at the owner and goes quiet) are claimed and
  delivered again by the topic's new owner;
* a node that leaves never comes back: each leaver stops while a blocking consume keeps it
  draining (and beating its peers) for a second after it left the registry, and no node
  logs it joining a second time.

Every wait is a condition with a generous deadline: the machine is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from lock_it_harness import rejoins_logged, wait_for
from queue_it_harness import QueueCluster, queue_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOPICS = [f"scale-{i}" for i in range(32)]
PROBE = [*TOPICS, *(f"probe-{i}" for i in range(468))]  # 500 topics for the movement
VISIBILITY_MS = 1500  # group g: an entry whose ack was lost comes back after this
HEIR_VISIBILITY_MS = 300  # group h: the new owner claims the straggler's entries
RING_WAIT_S = 30.0
CHANGES = (("join", "node4"), ("join", "node5"), ("leave", "node5"), ("leave", "node4"))
MOVE_SLACK = 0.05
# Slow failure detection: only the changes the test makes may move topics.
ENV = {
    "DISCOVERY_INTERVAL_MS": "200",
    "QUEUE_SUSPECT_AFTER_MS": "2000",
    "QUEUE_DEAD_AFTER_MS": "4000",
}
DRAIN_BLOCK_MS = 1000


Entry = tuple[str, str]  # (topic, entry id): ids are unique per stream only


@dataclass
class Ledger:
    """What the clients saw, by entry; times from this process's monotonic clock."""

    accepted: dict[Entry, str] = field(default_factory=dict)  # -> body (publish got 200)
    bodies: dict[Entry, str] = field(default_factory=dict)  # -> body (as delivered)
    deliveries: list[tuple[Entry, float]] = field(default_factory=list)  # consume started
    acked_at: dict[Entry, float] = field(default_factory=dict)  # -> first ack returned
    failed_publishes: int = 0


@dataclass
class Traffic:
    """The client tasks and the nodes they talk to (the test changes `targets`)."""

    q: QueueCluster
    targets: list[str]
    ledger: Ledger = field(default_factory=Ledger)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def pick(self, rng: random.Random) -> str:
        return rng.choice(self.targets)

    async def produce(self, index: int) -> None:
        rng = random.Random(index)
        n = 0
        while not self.stop.is_set():
            n += 1
            topic, body = rng.choice(TOPICS), f"p{index}-{n}"
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                reply = await self.q.publish(self.pick(rng), topic, body, idempotency_key=body)
                if reply.status == 200:
                    for entry_id in reply.field("ids"):
                        self.ledger.accepted[topic, entry_id] = body
                    await asyncio.sleep(0.01)
                    continue
            self.ledger.failed_publishes += 1
            await asyncio.sleep(0.05)

    async def consume(self, index: int) -> None:
        rng = random.Random(1000 + index)
        while not self.drained.is_set():
            node, topic = self.pick(rng), rng.choice(TOPICS)
            started = time.monotonic()
            try:
                got = await self._consume_once(node, topic, f"c{index}", started)
            except (TimeoutError, aiohttp.ClientError):
                got = False
            if not got:
                await asyncio.sleep(0.02)

    async def _consume_once(self, node: str, topic: str, consumer: str, started: float) -> bool:
        reply = await self.q.consume(
            node, topic, "g", consumer, max=50, visibility_ms=VISIBILITY_MS
        )
        if reply.status != 200 or not reply.field("messages"):
            return False
        ids = self.record(topic, reply.field("messages"), started)
        ack = await self.q.ack(node, topic, "g", ids)
        if ack.status == 200:
            # Every id is out of the pending list now: acked here, or `not_found` when it
            # was acked already (a forwarded ack whose answer was lost is served again).
            self.record_acks(topic, ids)
        return True

    def record(self, topic: str, messages: list[dict[str, object]], started: float) -> list[str]:
        ids = [str(m["id"]) for m in messages]
        for m in messages:
            self.ledger.bodies.setdefault((topic, str(m["id"])), str(m["body"]))
            self.ledger.deliveries.append(((topic, str(m["id"])), started))
        return ids

    def record_acks(self, topic: str, ids: list[str]) -> None:
        now = time.monotonic()
        for entry_id in ids:
            self.ledger.acked_at.setdefault((topic, entry_id), now)


async def ring_owners(q: QueueCluster, node: str, topics: list[str]) -> dict[str, str]:
    """`GET /ring?topic=` for every topic, asked of `node`."""
    limit = asyncio.Semaphore(16)

    async def one(topic: str) -> tuple[str, str]:
        async with limit:
            return topic, await q.owner(node, topic)

    return dict(await asyncio.gather(*(one(t) for t in topics)))


async def take_in_flight(q: QueueCluster, owners: dict[str, str], tag: str) -> dict[str, list[str]]:
    """A consumer of group h takes up to 3 entries of every topic at its owner and never
    acks them: they are in flight at that owner when the ring changes."""
    held: dict[str, list[str]] = {}
    for topic in TOPICS:
        reply = await q.consume(
            owners[topic], topic, "h", f"straggler-{tag}", max=3, visibility_ms=60_000
        )
        assert reply.status == 200 and reply.field("owner") == owners[topic], reply
        held[topic] = [m["id"] for m in reply.field("messages")]
    return held


async def hand_over(
    t: Traffic, held: dict[str, list[str]], before: dict[str, str], after: dict[str, str], tag: str
) -> int:
    """Each moved topic's new owner delivers again what its old owner had in flight; every
    entry of group h taken here is acked. Returns how many moved topics were checked."""
    checked = 0
    for topic, ids in held.items():
        if before[topic] == after[topic]:
            if ids:
                reply = await t.q.ack(after[topic], topic, "h", ids)
                assert reply.status == 200 and reply.field("acked") == len(ids), reply
            continue
        got: dict[str, int] = {}

        async def claim(topic: str = topic, got: dict[str, int] = got) -> dict[str, int]:
            new_owner = after[topic]
            reply = await t.q.consume(
                new_owner, topic, "h", f"heir-{tag}", max=50, visibility_ms=HEIR_VISIBILITY_MS
            )
            if reply.status == 200 and reply.field("owner") == new_owner:
                messages = reply.field("messages")
                got.update({m["id"]: m["deliveries"] for m in messages})
                if messages:
                    ack = await t.q.ack(new_owner, topic, "h", [m["id"] for m in messages])
                    assert ack.status == 200, ack
            return got

        await wait_for(claim, lambda g, ids=ids: set(ids) <= set(g), 20.0, f"{topic} handed over")
        assert all(got[i] >= 2 for i in ids), (topic, ids, got)
        checked += bool(ids)
    return checked


def moved_fraction(before: dict[str, str], after: dict[str, str]) -> tuple[float, set[str]]:
    moved = {topic for topic in before if before[topic] != after[topic]}
    return len(moved) / len(before), moved


async def change_membership(
    t: Traffic, members: list[str], change: str, node: str, owners: dict[str, str]
) -> None:
    """One join or graceful leave, then wait until every live node's ring agrees."""
    if change == "join":
        await t.q.add_node(node)
        members.append(node)
        t.targets.append(node)
    else:
        members.remove(node)
        blocking = await block_at(t.q, node, owners)
        # SIGTERM; clients go on picking it until it is gone (and get errors).
        await asyncio.to_thread(t.q.cluster.nodes[node].stop)
        t.targets.remove(node)
        await t.q.remove_node(node)
        await blocking
    await t.q.wait_ring(members, timeout_s=RING_WAIT_S)


async def block_at(q: QueueCluster, node: str, owners: dict[str, str]) -> asyncio.Task[object]:
    """A consume that blocks for DRAIN_BLOCK_MS at `node` on an idle topic it owns, so
    that its graceful stop drains that long; returns once the consume is waiting."""
    topic = next(t for t, owner in owners.items() if owner == node and t not in TOPICS)
    group = f"drain-{node}"
    waiting = asyncio.create_task(q.consume(node, topic, group, "d", block_ms=DRAIN_BLOCK_MS))

    async def groups() -> list[str]:
        reply = await q.call("node1", "GET", f"/queue/{topic}/stats")
        return [g["name"] for g in reply.field("groups") or []]

    # The consume creates its group, then blocks: once the group exists, it is waiting.
    await wait_for(groups, lambda names: group in names, 20.0, f"a blocking consume at {node}")
    return waiting


def check_ledger(ledger: Ledger) -> None:
    lost = set(ledger.accepted) - set(ledger.acked_at)
    assert not lost, f"{len(lost)} acknowledged publishes never consumed: {sorted(lost)[:10]}"
    late = [(i, s) for i, s in ledger.deliveries if i in ledger.acked_at and s > ledger.acked_at[i]]
    assert not late, f"delivered again after an ack returned: {late[:10]}"
    by_body: dict[str, set[Entry]] = {}
    for entry_id, body in ledger.bodies.items():
        by_body.setdefault(body, set()).add(entry_id)
    twice = {b: ids for b, ids in by_body.items() if len(ids) > 1}
    assert not twice, f"publishes stored twice: {list(twice.items())[:10]}"


async def wait_nothing_pending(q: QueueCluster) -> None:
    async def pending() -> dict[str, int]:
        counts = {}
        for topic in TOPICS:
            stats = (await q.call("node1", "GET", f"/queue/{topic}/stats")).body
            counts[topic] = sum(g["pending"] for g in stats["groups"])
        return {t: n for t, n in counts.items() if n}

    await wait_for(pending, lambda left: not left, 60.0, "no pending entry in any group")


async def drain(t: Traffic, tasks: list[asyncio.Task[None]]) -> None:
    """Consumers go on until every accepted publish is acked and nothing is pending."""
    ledger = t.ledger
    await wait_for(
        lambda: asyncio.sleep(0.2, result=set(ledger.accepted) - set(ledger.acked_at)),
        lambda left: not left,
        90.0,
        "every accepted publish acked",
    )
    await wait_nothing_pending(t.q)
    t.drained.set()
    await asyncio.gather(*tasks)


async def test_queue_grows_to_five_and_back_to_three_under_traffic(tmp_path: Path) -> None:
    async with queue_cluster(tmp_path, ENV) as q:
        members = list(q.ids)
        t = Traffic(q, list(q.ids))
        producers = [asyncio.create_task(t.produce(i)) for i in range(4)]
        consumers = [asyncio.create_task(t.consume(i)) for i in range(4)]
        await asyncio.sleep(1.0)
        fractions: list[tuple[str, str, float]] = []
        for round_no, (change, node) in enumerate(CHANGES):
            before = await ring_owners(q, "node1", PROBE)
            held = await take_in_flight(q, before, str(round_no))
            published = len(t.ledger.accepted)
            await change_membership(t, members, change, node, before)
            after = await ring_owners(q, "node1", PROBE)
            fraction, moved = moved_fraction(before, after)
            fractions.append((change, node, fraction))
            if change == "join":
                assert fraction <= 1 / len(members) + MOVE_SLACK, (node, fraction)
                assert {after[topic] for topic in moved} == {node}
            else:
                assert moved == {topic for topic, owner in before.items() if owner == node}
            assert await hand_over(t, held, before, after, str(round_no)) > 0
            # Traffic went on through the change.
            await wait_for(
                lambda p=published: asyncio.sleep(0.1, result=len(t.ledger.accepted) - p),
                lambda n: n >= 50,
                30.0,
                "publishes accepted after the change",
            )
        t.stop.set()
        await asyncio.gather(*producers)
        await drain(t, consumers)
        check_ledger(t.ledger)
        assert len(t.ledger.accepted) >= 500, len(t.ledger.accepted)
        assert not rejoins_logged(tmp_path / "logs")
        print(f"\nmoved fractions: {fractions}; published {len(t.ledger.accepted)}")
        redelivered = len(t.ledger.deliveries) - len(t.ledger.bodies)
        print(f"deliveries {len(t.ledger.deliveries)}, redelivered {redelivered}")
