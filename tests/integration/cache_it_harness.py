"""A real 3-node cache cluster (``distcluster node`` processes, NODE_TYPE=cache) over
a real Redis, for the cache integration tests.

Every node-to-node link src->dst goes through its own `TcpProxy` (the lock tests'
`ProxyMesh`), so a test can cut or isolate nodes; clients talk to nodes directly. The
harness owns Redis (a test can stop and start it) and the node processes (SIGKILL,
SIGSTOP, restart). Short leases and fast heartbeats keep the tests quick; the homes'
start-up grace is waited out before a test runs. HTTP helpers come from the lock harness
(`Reply`, `wait_for`) so there is one way to call a node and poll.

`History` is the stale-read check every test with concurrent clients shares; `add_node`
and `remove_node` grow and shrink the cluster (a new node's links are direct, not
proxied: only the registry makes it known to the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
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
from tcp_proxy import TcpProxy

from distcluster_worker.cache_role.slots import key_slot
from distcluster_worker.coherence import slot_name
from distcluster_worker.ring import HashRing
from distcluster_worker.runner.cluster import free_port, node_env
from distcluster_worker.runner.process import NodeProcess
from distcluster_worker.runner.redis_server import RedisServer

LEASE_MS = 1000
SLOT_LEASE_MS = 3000  # the default; hits go on at least 2 s with Redis down (crash tests)
HEARTBEAT_MS = 100
GRACE_S = (LEASE_MS + 2 * HEARTBEAT_MS) / 1000  # CacheSettings.grace_ms
FAST_CACHE_ENV: dict[str, str] = {
    "CACHE_LEASE_MS": str(LEASE_MS),
    "CACHE_HEARTBEAT_MS": str(HEARTBEAT_MS),
    "CACHE_SLOT_LEASE_MS": str(SLOT_LEASE_MS),
    "CACHE_SUSPECT_AFTER_MS": "2000",
    "CACHE_DEAD_AFTER_MS": "4000",
    "CACHE_TXN_TIMEOUT_MS": "5000",
    "RPC_TIMEOUT_MS": "300",
    "LOG_LEVEL": "INFO",
}
IDS = ("node1", "node2", "node3")


@dataclass
class History:
    """What concurrent clients saw, for the stale-read check (times: `time.monotonic()`).

    Every PUT writes a value no other PUT of the key writes. A PUT answered 200 is
    *confirmed*, with the version the home gave it and the time it returned; a PUT that
    failed (503, no answer) has an unknown outcome. A read notes when it started and
    returned, its status and value.

    The rule (`stale_reads`): once a PUT of version v returned, or a read returned the value
    of a confirmed PUT of version v, no read of that key that starts later, on any node,
    returns a confirmed value older than v, or 404 (the tests never delete). Values of
    failed PUTs may show up anywhere (their version is unknown); 503s on reads are allowed.
    """

    puts: dict[str, dict[str, tuple[int, float]]] = field(default_factory=dict)
    reads: list[tuple[str, str, float, float, int, str | None]] = field(default_factory=list)
    failed_puts: int = 0
    errors: int = 0

    def confirmed(self, key: str, value: str, version: int, returned: float) -> None:
        self.puts.setdefault(key, {})[value] = (version, returned)

    def read(
        self, node: str, key: str, started: float, returned: float, status: int, value: Any
    ) -> None:
        if status in (200, 404):
            shown = str(value) if status == 200 else None
            self.reads.append((node, key, started, returned, status, shown))

    def confirmed_writes(self) -> int:
        return sum(len(values) for values in self.puts.values())

    def stale_reads(self) -> list[str]:
        floors = self._floors()
        found = []
        for node, key, started, _, status, value in self.reads:
            floor = _floor_at(floors.get(key, []), started)
            if floor is None:
                continue
            if status == 404:
                found.append(f"{node} {key}: 404 after version {floor} was seen")
                continue
            version = self.puts.get(key, {}).get(str(value), (None, 0.0))[0]
            if version is not None and version < floor:
                found.append(f"{node} {key}: version {version} after version {floor} was seen")
        return found

    def _floors(self) -> dict[str, list[tuple[float, int]]]:
        """Per key, (time, version) of every confirmed PUT's return and of every read of
        a confirmed value, sorted by time."""
        floors: dict[str, list[tuple[float, int]]] = {}
        for key, values in self.puts.items():
            floors[key] = [(returned, version) for version, returned in values.values()]
        for _, key, _, returned, status, value in self.reads:
            known = self.puts.get(key, {}).get(str(value)) if status == 200 else None
            if known is not None:
                floors.setdefault(key, []).append((returned, known[0]))
        return {key: sorted(points) for key, points in floors.items()}


async def read_loop(
    c: CacheCluster,
    node: str,
    keys: list[str],
    history: History,
    stop: asyncio.Event,
    timeout_s: float = 15.0,
) -> None:
    """Read every key on `node`, over and over, into `history` until `stop`."""
    while not stop.is_set():
        for key in keys:
            started = time.monotonic()
            try:
                reply = await c.get(node, key, timeout_s=timeout_s)
            except (TimeoutError, aiohttp.ClientError):
                history.errors += 1  # the node is down, paused or stopping
                await asyncio.sleep(0.05)
                continue
            value = reply.field("value") if reply.status == 200 else None
            history.read(node, key, started, time.monotonic(), reply.status, value)


def _floor_at(points: list[tuple[float, int]], started: float) -> int | None:
    """The newest version seen (returned) strictly before `started`."""
    seen = [version for returned, version in points if returned < started]
    return max(seen) if seen else None


class CacheCluster:
    def __init__(
        self,
        nodes: dict[str, NodeProcess],
        urls: dict[str, str],
        session: aiohttp.ClientSession,
        mesh: ProxyMesh,
        redis: RedisServer,
        workdir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.nodes = nodes
        self.urls = urls
        self.session = session
        self.mesh = mesh
        self.redis = redis
        self.workdir = workdir
        self.env = dict(env or {})

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
        return ring_home(self.ids, key)

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

    # -- scaling ---------------------------------------------------------------------

    async def add_node(
        self,
        node: str,
        *,
        proxied: bool = False,
        cut: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Start one more node (PEERS: the nodes there now, at their own ports); the others
        learn it through the registry. Waits until it answers /health.

        `proxied`: every link out of it (its PEERS) and into it (its ``ADVERTISE_URL``, which
        the others learn from the registry) goes through a proxy of `mesh`, so that
        ``mesh.isolate(node)`` cuts it off (clients still reach it directly); `cut` starts
        it cut off already."""
        if self.workdir is None:
            raise RuntimeError("this cluster was not built by cache_cluster()")
        port = free_port()
        peers = {n: url.removeprefix("http://") for n, url in self.urls.items()}
        extra = {**self.env, **(env or {})}
        if proxied:
            for peer, address in peers.items():
                link = TcpProxy("127.0.0.1", int(address.rsplit(":", 1)[1])).start()
                self.mesh.links[(node, peer)] = link
                peers[peer] = link.address
            inbound = self.mesh.links[("*", node)] = TcpProxy("127.0.0.1", port).start()
            extra["ADVERTISE_URL"] = f"http://{inbound.address}"
            if cut:
                self.mesh.isolate(node)
        env_vars = node_env(
            role="cache", node_id=node, port=port, peers=peers, redis_url=self.redis.url,
            cluster_name="cacheit", extra=extra,
        )  # fmt: skip
        proc = NodeProcess(node, env_vars, log_path=self.workdir / "logs" / f"{node}.log")
        self.nodes[node], self.urls[node] = proc, f"http://127.0.0.1:{port}"
        proc.start()
        await asyncio.to_thread(proc.wait_healthy, self.urls[node], 30)

    async def remove_node(self, node: str) -> None:
        """Stop a node gracefully (SIGTERM, waits for its exit) and forget it."""
        await asyncio.to_thread(self.nodes[node].stop)
        del self.nodes[node], self.urls[node]

    async def rings(self) -> dict[str, list[str]]:
        """Each node's ring members (nodes that do not answer are left out)."""
        found = {}
        for node in self.ids:
            with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                reply = await self.call(node, "GET", "/cluster", timeout_s=5)
                if reply.status == 200:
                    found[node] = list(reply.field("state")["ring"])
        return found

    async def wait_ring(self, timeout_s: float, members: list[str] | None = None) -> None:
        """Wait until each of `members` (default: every node) shows exactly `members` on
        its ring."""
        want = sorted(members if members is not None else self.ids)

        def agreed(found: dict[str, list[str]]) -> bool:
            return all(sorted(found.get(node, [])) == want for node in want)

        await wait_for(self.rings, agreed, timeout_s, f"every ring to be {want}")


def ring_home(members: list[str], key: str) -> str:
    """The node a ring of `members` names to hold the key's slot (its home)."""
    return HashRing(members, vnodes=1024).owner(slot_name(key_slot(key)))


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
    env = {**FAST_CACHE_ENV, **(extra_env or {})}
    try:
        await asyncio.sleep(GRACE_S + 0.3)
        yield CacheCluster(nodes, urls, session, mesh, redis, workdir, env)
        ok = True
    finally:
        if not ok:
            print(f"\n===== cache node logs =====\n{log_tails(workdir / 'logs')}")
        await session.close()
        await asyncio.to_thread(_stop, nodes, mesh, redis)


__all__ = [
    "GRACE_S",
    "LEASE_MS",
    "SLOT_LEASE_MS",
    "CacheCluster",
    "History",
    "Reply",
    "cache_cluster",
    "read_loop",
    "ring_home",
    "wait_for",
]
