"""A handle on a real 3-node queue cluster for the queue integration tests.

Nodes talk to each other directly (no proxies: the queue tests break nodes with SIGKILL
and Redis with restarts, not links). Heartbeats are fast so a dead node leaves the ring
in about a second. Reuses `Reply`, `wait_for` and the port helpers of the lock harness.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from lock_it_harness import Reply, free_port_block, http_request, log_tails, wait_for

from distcluster_worker.runner.cluster import LocalCluster, free_port
from distcluster_worker.runner.redis_server import RedisServer

FAST_QUEUE_ENV: dict[str, str] = {
    "QUEUE_HEARTBEAT_MS": "100",
    "QUEUE_SUSPECT_AFTER_MS": "400",
    "QUEUE_DEAD_AFTER_MS": "1000",
    "RPC_TIMEOUT_MS": "500",
    "LOG_LEVEL": "INFO",
}
DEAD_AFTER_S = int(FAST_QUEUE_ENV["QUEUE_DEAD_AFTER_MS"]) / 1000


class QueueCluster:
    """A running queue cluster, its Redis, and client helpers that never raise on status."""

    def __init__(
        self, cluster: LocalCluster, redis: RedisServer, session: aiohttp.ClientSession
    ) -> None:
        self.cluster = cluster
        self.redis = redis
        self.session = session
        self.down: set[str] = set()

    @property
    def ids(self) -> list[str]:
        return list(self.cluster.urls)

    @property
    def live_ids(self) -> list[str]:
        return [n for n in self.ids if n not in self.down]

    async def call(
        self, node: str, method: str, path: str, payload: Any = None, data: str | None = None,
        timeout_s: float = 10.0,
    ) -> Reply:  # fmt: skip
        url = self.cluster.urls[node] + path
        return await http_request(self.session, method, url, payload, data, timeout_s)

    async def publish(self, node: str, topic: str, message: Any, **extra: Any) -> Reply:
        return await self.call(
            node, "POST", "/queue/publish", {"topic": topic, "message": message, **extra}
        )

    async def consume(
        self, node: str, topic: str, group: str, consumer: str, **extra: Any
    ) -> Reply:
        body = {"topic": topic, "group": group, "consumer": consumer, **extra}
        return await self.call(node, "POST", "/queue/consume", body)

    async def ack(self, node: str, topic: str, group: str, ids: list[str]) -> Reply:
        return await self.call(
            node, "POST", "/queue/ack", {"topic": topic, "group": group, "ids": ids}
        )

    async def ring(self, node: str) -> Reply:
        return await self.call(node, "GET", "/ring", timeout_s=2.0)

    async def owner(self, node: str, topic: str) -> str:
        reply = await self.call(node, "GET", f"/ring?topic={topic}")
        return str(reply.field("owner"))

    async def wait_ring(self, members: list[str], timeout_s: float) -> None:
        """Wait until every live node shows exactly `members` on its ring."""

        async def probe() -> dict[str, Any]:
            found = {}
            for node in self.live_ids:
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    found[node] = (await self.ring(node)).field("members")
            return found

        want = sorted(members)
        await wait_for(
            probe,
            lambda f: set(f) == set(self.live_ids) and all(v == want for v in f.values()),
            timeout_s,
            f"every ring to be {want}",
        )

    def kill(self, node: str) -> None:
        self.cluster.nodes[node].kill()
        self.down.add(node)

    async def restart(self, node: str) -> None:
        await asyncio.to_thread(self.cluster.restart_node, node)
        self.down.discard(node)

    async def add_node(self, node: str) -> None:
        """Start one more node that only the registry makes known (scaling up)."""
        await asyncio.to_thread(self.cluster.add_node, node, free_port())

    async def remove_node(self, node: str) -> None:
        """Stop a node gracefully (SIGTERM) and forget it (scaling down)."""
        await asyncio.to_thread(self.cluster.remove_node, node)
        self.down.discard(node)


def topic_owned_by(owners: Mapping[str, str], node: str) -> str:
    """A topic from `owners` (topic -> owner) that `node` owns."""
    return next(t for t, o in owners.items() if o == node)


def _build(workdir: Path, extra_env: Mapping[str, str] | None) -> tuple[LocalCluster, RedisServer]:
    base_port = free_port_block(3)
    redis = RedisServer(data_dir=workdir / "redis", appendonly=True, appendfsync="everysec")
    redis.start()
    cluster = LocalCluster(
        role="queue", nodes=3, base_port=base_port, redis_url=redis.url, workdir=workdir,
        extra_env={**FAST_QUEUE_ENV, **(extra_env or {})}, log_dir=workdir / "logs",
    )  # fmt: skip
    try:
        cluster.start(wait_ready_s=30)
        cluster.wait_ready(timeout_s=30)
    except BaseException:
        cluster.stop()
        redis.stop()
        raise
    return cluster, redis


@contextlib.asynccontextmanager
async def queue_cluster(
    workdir: Path, extra_env: Mapping[str, str] | None = None
) -> AsyncIterator[QueueCluster]:
    """Start Redis and 3 queue nodes; stop everything after (printing logs on failure)."""
    cluster, redis = await asyncio.to_thread(_build, workdir, extra_env)
    session = aiohttp.ClientSession()
    ok = False
    try:
        yield QueueCluster(cluster, redis, session)
        ok = True
    finally:
        if not ok:
            print(f"\n===== queue node logs =====\n{log_tails(workdir / 'logs')}")
        await session.close()
        await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(redis.stop)
