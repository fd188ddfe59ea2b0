"""The queue node's own logic, on three in-process nodes over real HTTP that share one
in-memory twin (as real nodes share one Redis): who serves a request, one forwarding
hop at most, serving around an unreachable owner, and storage failures as 503."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from distcluster_worker.membership import MemberState
from distcluster_worker.queue_role.memory_store import InMemoryStreamStore
from distcluster_worker.queue_role.node import QueueNode
from distcluster_worker.queue_role.settings import QueueSettings
from distcluster_worker.queue_role.store import ConsumeResult
from distcluster_worker.runner.cluster import port_is_free
from distcluster_worker.runner.redis_server import pick_free_port
from distcluster_worker.shell.config import load_settings

pytestmark = pytest.mark.timeout(60)

IDS = ("node1", "node2", "node3")
# Slow failure detection: a busy test machine must not make a live node look dead.
QUEUE = QueueSettings(heartbeat_ms=100, suspect_after_ms=2_000, dead_after_ms=4_000)


@dataclass
class Served:
    """One node's view of the shared twin, noting which node served what."""

    twin: InMemoryStreamStore
    node_id: str
    log: list[tuple[str, str]]

    async def publish(self, topic: str, bodies: Sequence[Any], key: str | None) -> Any:
        self.log.append((self.node_id, "publish"))
        return await self.twin.publish(topic, bodies, key)

    async def consume(self, *args: Any) -> ConsumeResult:
        self.log.append((self.node_id, "consume"))
        return await self.twin.consume(*args)

    async def ack(self, topic: str, group: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        self.log.append((self.node_id, "ack"))
        return await self.twin.ack(topic, group, ids)

    async def nack(self, topic: str, group: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        self.log.append((self.node_id, "nack"))
        return await self.twin.nack(topic, group, ids)

    async def stats(self, topic: str, now_ms: int) -> dict[str, Any]:
        return await self.twin.stats(topic, now_ms)

    async def trim(self, topic: str) -> int:
        return await self.twin.trim(topic)

    async def ping(self) -> bool:
        return await self.twin.ping()

    async def close(self) -> None:
        return None


@dataclass
class Trio:
    nodes: dict[str, QueueNode]
    twin: InMemoryStreamStore
    session: aiohttp.ClientSession
    log: list[tuple[str, str]] = field(default_factory=list)

    def url(self, node: str) -> str:
        return self.nodes[node].settings.base_url

    async def post(self, node: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(self.url(node) + path, json=body) as resp:
            return resp.status, await resp.json()

    def owner_and_others(self, topic: str) -> tuple[str, list[str]]:
        owner = self.nodes["node1"].view.owner(topic)
        return owner, [n for n in IDS if n != owner]

    def served(self) -> list[tuple[str, str]]:
        out, self.log[:] = list(self.log), []
        return out


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = pick_free_port()
        if port not in ports and port_is_free(port):
            ports.append(port)
    return ports


@pytest.fixture
async def trio() -> AsyncIterator[Trio]:
    ports = dict(zip(IDS, free_ports(3), strict=True))
    peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in ports.items())
    twin = InMemoryStreamStore(QueueSettings(), clock_ms=lambda: 1_000)
    log: list[tuple[str, str]] = []
    nodes = {}
    for node_id, port in ports.items():
        env = {"NODE_ID": node_id, "NODE_TYPE": "queue", "PORT": str(port), "PEERS": peers}
        env.update(RPC_TIMEOUT_MS="1000", SHUTDOWN_GRACE_MS="200")
        store = Served(twin, node_id, log)
        nodes[node_id] = QueueNode(load_settings(env), queue_settings=QUEUE, store=store)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        for node in nodes.values():
            await node.start()
        yield Trio(nodes, twin, session, log)
    finally:
        await session.close()
        for node in nodes.values():
            await node.stop()


async def test_every_request_is_served_by_the_owner_whichever_node_takes_it(trio: Trio) -> None:
    owner, _ = trio.owner_and_others("orders")
    for node in IDS:
        status, reply = await trio.post(
            node, "/queue/publish", {"topic": "orders", "message": node}
        )
        assert status == 200 and reply["owner"] == owner, reply
        body = {"topic": "orders", "group": "g", "consumer": node, "max": 5}
        status, got = await trio.post(node, "/queue/consume", body)
        assert status == 200 and [m["body"] for m in got["messages"]] == [node], got
        ids = [m["id"] for m in got["messages"]]
        ack = {"topic": "orders", "group": "g", "ids": ids}
        status, acked = await trio.post(node, "/queue/ack", ack)
        assert status == 200 and acked["acked"] == 1, acked
    served = trio.served()
    assert {who for who, _ in served} == {owner} and len(served) == 9, served


async def test_a_forwarded_request_is_never_forwarded_again(trio: Trio) -> None:
    owner, (other, _) = trio.owner_and_others("orders")
    body = {"topic": "orders", "message": "x"}
    status, reply = await trio.post(other, "/queue/publish?hops=1", body)
    assert status == 200 and reply["owner"] == owner
    assert trio.served() == [(other, "publish")]  # served where it landed, not bounced


async def test_an_unreachable_owner_is_served_around_and_then_skipped(trio: Trio) -> None:
    owner, (entry, _) = trio.owner_and_others("orders")
    await trio.nodes[owner].stop()
    for attempt in range(2):
        status, reply = await trio.post(
            entry, "/queue/publish", {"topic": "orders", "message": "m"}
        )
        assert status == 200 and reply["ids"], (attempt, reply)
    assert trio.served() == [(entry, "publish"), (entry, "publish")]
    assert trio.nodes[entry].view.membership.state(owner) is MemberState.SUSPECT
    metrics = trio.nodes[entry].metrics.render().decode()
    assert 'distcluster_queue_forwarded_total{result="unreachable"} 1.0' in metrics
    assert 'distcluster_queue_forwarded_total{result="skipped_suspect"} 1.0' in metrics
    got = await trio.twin.consume("orders", "g", "c", 10, 60_000, 0)
    assert len(got.messages) == 2  # both publishes are in the shared storage


async def test_a_storage_failure_is_503_through_the_owner_and_through_forwarding(
    trio: Trio,
) -> None:
    owner, (other, _) = trio.owner_and_others("orders")
    trio.twin.down = True
    for node in (owner, other):
        status, reply = await trio.post(node, "/queue/publish", {"topic": "orders", "message": "m"})
        assert status == 503 and reply["error"]["code"] == "unavailable", (node, reply)
    trio.twin.down = False
    status, _ = await trio.post(other, "/queue/publish", {"topic": "orders", "message": "m"})
    assert status == 200


async def test_nack_through_a_non_owner_redelivers_at_once(trio: Trio) -> None:
    _, (other, _) = trio.owner_and_others("jobs")
    await trio.post(other, "/queue/publish", {"topic": "jobs", "message": "j"})
    take = {"topic": "jobs", "group": "g", "consumer": "a", "visibility_ms": 60_000}
    (_, first) = await trio.post(other, "/queue/consume", take)
    ids = [m["id"] for m in first["messages"]]
    status, nacked = await trio.post(
        other, "/queue/nack", {"topic": "jobs", "group": "g", "ids": ids}
    )
    assert status == 200 and nacked["nacked"] == 1
    (_, again) = await trio.post(other, "/queue/consume", {**take, "consumer": "b"})
    assert [(m["id"], m["deliveries"]) for m in again["messages"]] == [(ids[0], 2)]
