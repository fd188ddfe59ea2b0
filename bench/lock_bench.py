"""Lock manager throughput, latency and failover, against a raw Redis lock baseline.

`python -m bench.lock_bench [--duration S] [--quick]` starts its own Redis (AOF,
appendfsync everysec: the persistence both sides run with) and a 3-node lock_manager
cluster on free ports, then prints one JSON document on stdout (progress goes to stderr).

A *cycle* is acquire then release. Each case runs N concurrent clients for `--duration`
seconds, either on N distinct resources or all on one resource (with a large `wait_ms`, so
waiters queue and the lock is handed over). The client sends to the leader it finds on
`/raft/status`, as etcd's clients follow the leader; one extra case (`*-spread`) sends
round-robin over the three nodes, as a load balancer would, so two thirds of the requests
are forwarded by a follower: the price of "any node accepts any request". The client
process runs on uvloop, for the cluster and the baseline alike.

The baseline is the usual single-Redis lock with redis.asyncio: `SET key token NX PX ttl`,
retried every 1 ms while taken, released by a compare-and-delete Lua script. It has no
fencing, no FIFO hand-over, no deadlock detection and no replication, so the ratio is the
price of those, not a like-for-like race.

Failover: the leader is SIGKILLed (then restarted) `failover_rounds` times; a sample is the
time from the kill to the next successful acquire through a surviving node.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from bench import common
from bench.common import free_port_block, percentile
from distcluster_worker.runner.cluster import LocalCluster
from distcluster_worker.runner.redis_server import RedisServer

CLIENT_COUNTS = (1, 16, 64)
PATTERNS = ("distinct", "single")
NODES = 3
TTL_MS = 10_000
WAIT_MS = 60_000
BASELINE_RETRY_S = 0.001
FAILOVER_ROUNDS = 10
FAILOVER_GIVE_UP_S = 30.0
PERSISTENCE = "appendonly yes, appendfsync everysec"
NODE_ENV = {"LOG_LEVEL": "WARNING"}

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

Cycle = Callable[[int, str], Awaitable[bool]]

log = common.make_log("lock_bench")


@dataclass
class Measure:
    """Cycle latencies (seconds) and failures of one case."""

    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0

    @property
    def cycles_per_s(self) -> float:
        return len(self.latencies_s) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        return percentile(self.latencies_s, q) * 1000.0


# -- load generation -------------------------------------------------------------------


async def run_case(cycle: Cycle, clients: int, resources: list[str], duration_s: float) -> Measure:
    """`clients` loops of `cycle` for `duration_s`; client i uses resources[i % len]."""
    measure = Measure()
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + duration_s

    async def client(index: int) -> None:
        resource = resources[index % len(resources)]
        while loop.time() < end:
            began = loop.time()
            if await cycle(index, resource):
                measure.latencies_s.append(loop.time() - began)
            else:
                measure.errors += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    measure.elapsed_s = loop.time() - start
    return measure


def case_resources(prefix: str, pattern: str, clients: int) -> list[str]:
    if pattern == "single":
        return [f"{prefix}-hot"]
    return [f"{prefix}-{i}" for i in range(clients)]


class ClusterClient:
    """acquire+release cycles against the cluster, round-robin over `urls`."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str]) -> None:
        self.session = session
        self.urls = urls
        self._next = itertools.count()

    def _url(self) -> str:
        return self.urls[next(self._next) % len(self.urls)]

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(self._url() + path, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def cycle(self, index: int, resource: str) -> bool:
        owner = f"client-{index}"
        acquire = {
            "resource": resource,
            "owner": owner,
            "mode": "exclusive",
            "ttl_ms": TTL_MS,
            "wait_ms": WAIT_MS,
        }
        try:
            status, grant = await self.post("/lock/acquire", acquire)
            if status != 200:
                return False
            release = {"resource": resource, "owner": owner, "token": grant["token"]}
            status, _ = await self.post("/lock/release", release)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return False
        return status == 200


class RedisLockClient:
    """The baseline: SET NX PX with 1 ms retries, compare-and-delete release."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.release_script = client.register_script(RELEASE_LUA)

    async def cycle(self, index: int, resource: str) -> bool:
        key = f"bench:baseline:{resource}"
        token = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        give_up = loop.time() + WAIT_MS / 1000.0
        while not await self.client.set(key, token, nx=True, px=TTL_MS):
            if loop.time() >= give_up:
                return False
            await asyncio.sleep(BASELINE_RETRY_S)
        released = await self.release_script(keys=[key], args=[token])
        return int(released) == 1


# -- the cluster under test ------------------------------------------------------------


async def raft_status(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with session.get(url + "/raft/status", timeout=timeout) as resp:
            body = await resp.json(content_type=None)
            return body if resp.status == 200 and isinstance(body, dict) else None
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


async def wait_leader(
    session: aiohttp.ClientSession, urls: dict[str, str], timeout_s: float = 30.0
) -> str:
    """Wait until every node in `urls` answers and names the same leader."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        found = await asyncio.gather(*(raft_status(session, u) for u in urls.values()))
        leaders = {s.get("leader_id") if s else None for s in found}
        if len(leaders) == 1 and None not in leaders:
            leader = leaders.pop()
            if isinstance(leader, str) and leader in urls:
                return leader
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no agreed leader among {sorted(urls)} after {timeout_s} s")


async def failover_sample(
    cluster: LocalCluster, session: aiohttp.ClientSession, round_no: int
) -> float:
    """SIGKILL the leader; seconds until an acquire through a survivor succeeds."""
    leader = await wait_leader(session, cluster.urls)
    survivors = [u for n, u in cluster.urls.items() if n != leader]
    client = ClusterClient(session, survivors)
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    await asyncio.to_thread(cluster.nodes[leader].kill)
    body = {"resource": f"failover-{round_no}", "owner": "probe", "ttl_ms": 1000, "wait_ms": 0}
    while loop.time() - killed_at < FAILOVER_GIVE_UP_S:
        try:
            status, _ = await client.post("/lock/acquire", body)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            status = 0
        if status == 200:
            elapsed_s = loop.time() - killed_at
            break
        await asyncio.sleep(0.005)
    else:
        raise TimeoutError(f"no acquire succeeded {FAILOVER_GIVE_UP_S} s after killing {leader}")
    await asyncio.to_thread(cluster.restart_node, leader)
    await wait_leader(session, cluster.urls)
    return elapsed_s


# -- the report ------------------------------------------------------------------------


def case_report(
    name: str, clients: int, pattern: str, ours: Measure, base: Measure
) -> dict[str, Any]:
    return {
        "name": name,
        "clients": clients,
        "resources": clients if pattern == "distinct" else 1,
        "cycles_per_s": round(ours.cycles_per_s, 1),
        "p50_ms": round(ours.percentile_ms(50), 2),
        "p99_ms": round(ours.percentile_ms(99), 2),
        "errors": ours.errors,
        "baseline_cycles_per_s": round(base.cycles_per_s, 1),
        "baseline_p50_ms": round(base.percentile_ms(50), 2),
        "baseline_p99_ms": round(base.percentile_ms(99), 2),
        "baseline_errors": base.errors,
        "ratio": round(ours.cycles_per_s / base.cycles_per_s, 4) if base.cycles_per_s else None,
    }


def failover_report(samples_s: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": round(percentile(samples_s, 50) * 1000, 1),
        "max_ms": round(max(samples_s) * 1000, 1) if samples_s else 0.0,
        "samples": len(samples_s),
        "samples_ms": [round(s * 1000, 1) for s in samples_s],
    }


async def run_cases(
    cluster: LocalCluster, redis_url: str, duration_s: float, counts: tuple[int, ...]
) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=WAIT_MS / 1000 + 30)
    redis_client = aioredis.Redis.from_url(redis_url, max_connections=256)
    reports: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            base = RedisLockClient(redis_client)
            cases = [(p, c, "leader") for p in PATTERNS for c in counts]
            cases.append(("distinct", max(counts), "spread"))
            for pattern, clients, route in cases:
                name = f"{pattern}-{clients}" + ("-spread" if route == "spread" else "")
                log(f"case {name}: cluster, then baseline ({duration_s} s each)")
                leader = await wait_leader(session, cluster.urls)
                urls = [cluster.urls[leader]] if route == "leader" else list(cluster.urls.values())
                ours = ClusterClient(session, urls)
                resources = case_resources(f"bench-{name}", pattern, clients)
                mine = await run_case(ours.cycle, clients, resources, duration_s)
                theirs = await run_case(base.cycle, clients, resources, duration_s)
                report = case_report(name, clients, pattern, mine, theirs)
                reports.append({**report, "route": route})
    finally:
        await redis_client.aclose()
    return reports


async def run_failover(cluster: LocalCluster, rounds: int) -> list[float]:
    samples: list[float] = []
    async with aiohttp.ClientSession() as session:
        for round_no in range(rounds):
            samples.append(await failover_sample(cluster, session, round_no))
            log(f"failover {round_no + 1}/{rounds}: {samples[-1] * 1000:.0f} ms")
    return samples


def start_cluster(workdir: Path, redis_url: str) -> LocalCluster:
    cluster = LocalCluster(
        role="lock_manager",
        nodes=NODES,
        base_port=free_port_block(NODES),
        redis_url=redis_url,
        cluster_name="bench",
        workdir=workdir,
        extra_env=NODE_ENV,
        log_dir=workdir / "logs",
    )
    cluster.start(wait_ready_s=60)
    return cluster


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    duration_s = 1.0 if args.quick else args.duration
    rounds = 3 if args.quick else FAILOVER_ROUNDS
    redis = RedisServer(data_dir=workdir / "redis", appendonly=True, appendfsync="everysec")
    redis.start()
    cluster: LocalCluster | None = None
    try:
        cluster = await asyncio.to_thread(start_cluster, workdir, redis.url)
        started = time.monotonic()
        cases = await run_cases(cluster, redis.url, duration_s, CLIENT_COUNTS)
        failover = failover_report(await run_failover(cluster, rounds))
        return {
            "redis_persistence": PERSISTENCE,
            "nodes": NODES,
            "duration_s_per_case": duration_s,
            "client_process": "one uvloop process, aiohttp keep-alive, leader-directed",
            "cases": cases,
            "failover": failover,
            "wall_s": round(time.monotonic() - started, 1),
        }
    finally:
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(
        "lock_bench", __doc__, argv, duration=5.0, quick="1 s cases, 3 failovers"
    )
    return common.main("lock_bench", args, bench)


if __name__ == "__main__":
    sys.exit(main())
