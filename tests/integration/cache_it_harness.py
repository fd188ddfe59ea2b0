"""A real 3-node cache cluster (``distcluster node`` processes, NODE_TYPE=cache) over
a real Redis, for the cache integration tests. Short leases and fast heartbeats keep the
tests quick; the home grace period after start is waited out before tests run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from lock_it_harness import Reply, _parse, free_port_block, log_tails, wait_for

from distcluster_worker.runner.cluster import node_env
from distcluster_worker.runner.process import NodeProcess
from distcluster_worker.runner.redis_server import RedisServer

LEASE_MS = 1000
FAST_CACHE_ENV: dict[str, str] = {
    "CACHE_LEASE_MS": str(LEASE_MS),
    "CACHE_HEARTBEAT_MS": "100",
    "CACHE_SUSPECT_AFTER_MS": "2000",
    "CACHE_DEAD_AFTER_MS": "4000",
    "CACHE_TXN_TIMEOUT_MS": "5000",
    "RPC_TIMEOUT_MS": "300",
    "LOG_LEVEL": "INFO",
}


class CacheCluster:
    def __init__(
        self, nodes: dict[str, NodeProcess], urls: dict[str, str], session: aiohttp.ClientSession
    ) -> None:
        self.nodes = nodes
        self.urls = urls
        self.session = session

    @property
    def ids(self) -> list[str]:
        return list(self.urls)

    async def call(
        self, node: str, method: str, path: str, payload: Any = None, data: str | None = None,
        timeout_s: float = 15.0,
    ) -> Reply:  # fmt: skip
        kwargs: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=timeout_s)}
        if payload is not None:
            kwargs["json"] = payload
        elif data is not None:
            kwargs["data"] = data
            kwargs["headers"] = {"Content-Type": "application/json"}
        async with self.session.request(method, self.urls[node] + path, **kwargs) as r:
            return Reply(r.status, _parse(await r.text()))

    async def get(self, node: str, key: str) -> Reply:
        return await self.call(node, "GET", f"/cache/{key}")

    async def put(self, node: str, key: str, value: str) -> Reply:
        return await self.call(node, "PUT", f"/cache/{key}", {"value": value})

    async def lines(self, node: str) -> dict[str, str]:
        reply = await self.call(node, "GET", "/cache/lines")
        return {line["key"]: line["state"] for line in reply.field("lines")}

    async def stats(self, node: str) -> dict[str, Any]:
        body = (await self.call(node, "GET", "/cache/stats")).body
        assert isinstance(body, dict)
        return body

    def home_of(self, key: str) -> str:
        """The key's home, from the ring every node agrees on (3 live members)."""
        from distcluster_worker.ring import HashRing

        return HashRing(self.ids, vnodes=1024).owner(key)


def _start(
    workdir: Path, extra_env: Mapping[str, str] | None
) -> tuple[dict[str, NodeProcess], dict[str, str], RedisServer]:  # noqa: E501
    base = free_port_block(3)
    redis = RedisServer(data_dir=workdir / "redis", appendonly=False)
    redis.start()
    ids = [f"node{i}" for i in range(1, 4)]
    addrs = {n: f"127.0.0.1:{base + i}" for i, n in enumerate(ids)}
    nodes: dict[str, NodeProcess] = {}
    for i, n in enumerate(ids):
        env = node_env(
            role="cache", node_id=n, port=base + i, peers=addrs, redis_url=redis.url,
            cluster_name="cacheit", extra={**FAST_CACHE_ENV, **(extra_env or {})},
        )  # fmt: skip
        nodes[n] = NodeProcess(n, env, log_path=workdir / "logs" / f"{n}.log")
    urls = {n: f"http://{a}" for n, a in addrs.items()}
    try:
        for n in ids:
            nodes[n].start()
        for n in ids:
            nodes[n].wait_healthy(urls[n], timeout_s=20)
    except BaseException:
        _stop(nodes, redis)
        raise
    return nodes, urls, redis


def _stop(nodes: Mapping[str, NodeProcess], redis: RedisServer) -> None:
    for proc in nodes.values():
        proc.resume()
        proc.stop()
    redis.stop()


@contextlib.asynccontextmanager
async def cache_cluster(
    workdir: Path, extra_env: Mapping[str, str] | None = None
) -> AsyncIterator[CacheCluster]:
    """Start Redis and 3 cache nodes, wait out the homes' start-up grace; stop after."""
    nodes, urls, redis = await asyncio.to_thread(_start, workdir, extra_env)
    session = aiohttp.ClientSession()
    ok = False
    try:
        await asyncio.sleep(LEASE_MS / 1000 + 0.2)
        yield CacheCluster(nodes, urls, session)
        ok = True
    finally:
        if not ok:
            print(f"\n===== cache node logs =====\n{log_tails(workdir / 'logs')}")
        await session.close()
        await asyncio.to_thread(_stop, nodes, redis)


__all__ = ["LEASE_MS", "CacheCluster", "Reply", "cache_cluster", "wait_for"]
