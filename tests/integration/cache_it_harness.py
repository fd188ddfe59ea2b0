"""A real 3-node cache cluster (``distcluster node`` processes, NODE_TYPE=cache) over
a real Redis, for the cache integration tests.

Every node-to-node link src->dst goes through its own `TcpProxy` (the lock tests'
`ProxyMesh`), so a test can cut or isolate nodes; clients talk to nodes directly. The
harness owns Redis (a test can stop and start it) and the node processes (SIGKILL,
SIGSTOP, restart). Short leases and fast heartbeats keep the tests quick; the homes'
start-up grace is waited out before a test runs. HTTP helpers come from the lock harness
(`Reply`, `wait_for`) so there is one way to call a node and poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from lock_it_harness import (
    ProxyMesh,
    Reply,
    free_port_block,
    http_request,
    log_tails,
    wait_for,
)

from distcluster_worker.ring import HashRing
from distcluster_worker.runner.cluster import node_env
from distcluster_worker.runner.process import NodeProcess
from distcluster_worker.runner.redis_server import RedisServer

LEASE_MS = 1000
HEARTBEAT_MS = 100
GRACE_S = (LEASE_MS + 2 * HEARTBEAT_MS) / 1000  # CacheSettings.grace_ms
FAST_CACHE_ENV: dict[str, str] = {
    "CACHE_LEASE_MS": str(LEASE_MS),
    "CACHE_HEARTBEAT_MS": str(HEARTBEAT_MS),
    "CACHE_SUSPECT_AFTER_MS": "2000",
    "CACHE_DEAD_AFTER_MS": "4000",
    "CACHE_TXN_TIMEOUT_MS": "5000",
    "RPC_TIMEOUT_MS": "300",
    "LOG_LEVEL": "INFO",
}
IDS = ("node1", "node2", "node3")


class CacheCluster:
    def __init__(
        self,
        nodes: dict[str, NodeProcess],
        urls: dict[str, str],
        session: aiohttp.ClientSession,
        mesh: ProxyMesh,
        redis: RedisServer,
    ) -> None:
        self.nodes = nodes
        self.urls = urls
        self.session = session
        self.mesh = mesh
        self.redis = redis

    @property
    def ids(self) -> list[str]:
        return list(self.urls)

    async def call(
        self, node: str, method: str, path: str, payload: Any = None, data: str | None = None,
        timeout_s: float = 15.0,
    ) -> Reply:  # fmt: skip
        url = self.urls[node] + path
        return await http_request(self.session, method, url, payload, data, timeout_s)

    async def get(self, node: str, key: str, timeout_s: float = 15.0) -> Reply:
        return await self.call(node, "GET", f"/cache/{key}", timeout_s=timeout_s)

    async def put(self, node: str, key: str, value: str, timeout_s: float = 15.0) -> Reply:
        return await self.call(node, "PUT", f"/cache/{key}", {"value": value}, timeout_s=timeout_s)

    async def lines(self, node: str) -> dict[str, str]:
        reply = await self.call(node, "GET", "/cache/lines")
        return {line["key"]: line["state"] for line in reply.field("lines")}

    async def stats(self, node: str) -> dict[str, Any]:
        body = (await self.call(node, "GET", "/cache/stats")).body
        assert isinstance(body, dict)
        return body

    def home_of(self, key: str) -> str:
        """The key's home, from the ring every node agrees on (3 live members)."""
        return HashRing(self.ids, vnodes=1024).owner(key)

    def key_homed_at(self, node: str, prefix: str = "k") -> str:
        return next(k for k in (f"{prefix}{i}" for i in range(1000)) if self.home_of(k) == node)

    # -- faults ----------------------------------------------------------------------

    def kill(self, node: str) -> None:
        self.nodes[node].kill()

    def pause(self, node: str) -> None:
        self.nodes[node].pause()

    def resume(self, node: str) -> None:
        self.nodes[node].resume()

    async def restart(self, node: str) -> None:
        """Start a killed node again (empty) and wait until it answers /health."""
        proc = self.nodes[node]
        proc.start()
        await asyncio.to_thread(proc.wait_healthy, self.urls[node], 20)


def _start(
    workdir: Path, extra_env: Mapping[str, str] | None
) -> tuple[dict[str, NodeProcess], dict[str, str], ProxyMesh, RedisServer]:
    base = free_port_block(3)
    ports = {n: base + i for i, n in enumerate(IDS)}
    mesh = ProxyMesh(ports)
    redis = RedisServer(data_dir=workdir / "redis", appendonly=False)
    redis.start()
    nodes: dict[str, NodeProcess] = {}
    for n in IDS:
        peers = {**{p: mesh.address(n, p) for p in IDS if p != n}, n: f"127.0.0.1:{ports[n]}"}
        env = node_env(
            role="cache", node_id=n, port=ports[n], peers=peers, redis_url=redis.url,
            cluster_name="cacheit", extra={**FAST_CACHE_ENV, **(extra_env or {})},
        )  # fmt: skip
        nodes[n] = NodeProcess(n, env, log_path=workdir / "logs" / f"{n}.log")
    urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    try:
        for n in IDS:
            nodes[n].start()
        for n in IDS:
            nodes[n].wait_healthy(urls[n], timeout_s=20)
    except BaseException:
        _stop(nodes, mesh, redis)
        raise
    return nodes, urls, mesh, redis


def _stop(nodes: Mapping[str, NodeProcess], mesh: ProxyMesh, redis: RedisServer) -> None:
    for proc in nodes.values():
        proc.resume()
        proc.stop()
    mesh.close()
    redis.stop()


@contextlib.asynccontextmanager
async def cache_cluster(
    workdir: Path, extra_env: Mapping[str, str] | None = None
) -> AsyncIterator[CacheCluster]:
    """Start Redis and 3 cache nodes, wait out the homes' start-up grace; stop after."""
    nodes, urls, mesh, redis = await asyncio.to_thread(_start, workdir, extra_env)
    session = aiohttp.ClientSession()
    ok = False
    try:
        await asyncio.sleep(GRACE_S + 0.3)
        yield CacheCluster(nodes, urls, session, mesh, redis)
        ok = True
    finally:
        if not ok:
            print(f"\n===== cache node logs =====\n{log_tails(workdir / 'logs')}")
        await session.close()
        await asyncio.to_thread(_stop, nodes, mesh, redis)


__all__ = ["GRACE_S", "LEASE_MS", "CacheCluster", "Reply", "cache_cluster", "wait_for"]
