"""Cache hit ratio, throughput and latency on a Zipf workload, against a pass-through run.

`python -m bench.cache_bench [--duration S] [--quick]` starts its own Redis (AOF,
appendfsync everysec) and three 3-node cache clusters on free ports sharing that Redis
(each under its own cluster name, so its own keys), then prints one JSON document on
stdout (progress goes to stderr). One uvloop client process, aiohttp keep-alive.

Workload (issue 4): 10,000 keys `k0..k9999`, key rank drawn from a Zipf law (s = 1.1),
90% GET / 10% PUT (100-byte string values), 16 closed-loop clients, client i talking to
node i % 3. Every client draws from its own seeded generator, so every run replays the
same per-client sequences (each run uses a prefix, as long as it had time for). The keys
are preloaded, straight into Redis in the cache store's layout (`val`, `ver` = 1), so
the clusters start empty over the same data: preloading by 10,000 PUTs through the
cluster took about 90 s on the 2-core machine.

The clusters run at the same time and are measured in turn: an unmeasured warm-up of
`WARMUP_S` each, then `ROUNDS` rounds of one segment per cluster, `--duration / ROUNDS`
seconds each; each client's op stream goes on from segment to segment. Measuring the two
one after the other made their ratio depend on whatever else the machine was doing in
each half (two runs on a shared 2-core box gave 2.2 and 1.1); alternating segments puts
such load on all alike. Hit ratio and the other node counters are the differences of
`/cache/stats`, summed over the three nodes, across the measured segments.

Four measurements:

* `cached`: `CACHE_CAPACITY=1000` on every node (the issue's setting), client i on node
  i % 3 whatever the key: MESI at work (copies on several nodes, invalidations).
* `home_routed`: a third cluster like `cached`, but each client sends every request to
  the key's home (learned once per key from `GET /ring?key=`, as a client library would):
  each key lives on one node, so the three nodes' capacities add up.
* `pass_through`: the same nodes with `CACHE_CAPACITY=1`, so in effect every read misses
  and goes through the key's home to Redis: the cost of the same HTTP path with no cache.
* `raw_redis` (after the clusters): redis.asyncio GET/SET against the same Redis, the same trace
  and client count; a reference for what a client would get with no cache tier at all.

`hit_ratio` counts reads served from the node's own copy; `reads_from_redis_fraction`
counts reads that reached Redis (a miss served from a peer's copy did not).

How to read the ratios: `read_ops_ratio_vs_pass_through` is the cached run's GETs/s over
the pass-through run's (issue target: at least 1.3); `ops_ratio_vs_raw_redis` is the
cached run's ops/s over raw Redis's (the price of the HTTP tier and coherence).
`reference_lru_hit_ratio` replays the ops the cached run executed (the clients'
sequences interleaved round-robin) through one in-process LRU of one node's capacity;
the issue's target is a cluster hit ratio within 5 points of it.
`reference_coherent_hit_ratio` replays the same ops through an ideal 3-node coherent
cache (an LRU per node, invalidation on writes, nothing else): what MESI over three
nodes can reach at best on this trace. `reference_home_routed_hit_ratio` replays the
home-routed run's ops through one LRU per home, and `home_routed_reference_lru_hit_ratio`
the same ops through one LRU of one node's capacity (the target's reference for that run).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
import redis.asyncio as aioredis

from bench import common
from bench.common import free_port_block, ms
from distcluster_worker.runner.cluster import LocalCluster
from distcluster_worker.runner.redis_server import RedisServer

NODES = 3
KEYS = 10_000
ZIPF_S = 1.1
CAPACITY = 1000
PASS_THROUGH_CAPACITY = 1
READ_FRACTION = 0.9
CLIENTS = 16
VALUE_BYTES = 100
WARMUP_S = 2.0
STORE_PREFIX = "dc"  # {KEY_PREFIX}:{CLUSTER_NAME}:cache:{key}, the store's layout
ROUNDS = 4
SEED = 20240611
PERSISTENCE = "appendonly yes, appendfsync everysec"
NODE_ENV = {"LOG_LEVEL": "WARNING"}
STAT_COUNTERS = (
    "hits", "misses", "evictions", "invalidations_sent", "bus_reads", "home_memory_reads",
    "home_graces", "renewals_refused",
)  # fmt: skip

Op = tuple[bool, int]  # (is_write, key index)
Get = Callable[[int, int], Awaitable[bool]]
Put = Callable[[int, int, str], Awaitable[bool]]

log = common.make_log("cache_bench")


@dataclass
class Measure:
    """Latencies (seconds) of gets and puts, failures, and the ops executed per client."""

    get_s: list[float] = field(default_factory=list)
    put_s: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0
    trace: list[list[Op]] = field(default_factory=list)

    def per_s(self, values: list[float]) -> float:
        return len(values) / self.elapsed_s if self.elapsed_s else 0.0


def key_name(index: int) -> str:
    return f"k{index}"


def value_for(rng: random.Random) -> str:
    return "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=VALUE_BYTES))


# -- the workload ----------------------------------------------------------------------


def zipf_cum_weights(n: int, s: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (rank + 1) ** s for rank in range(n)))


class OpStream:
    """One client's endless, seeded sequence of (is_write, key index)."""

    CHUNK = 1024

    def __init__(self, client: int, cum_weights: list[float]) -> None:
        self.rng = random.Random(SEED + client)
        self.cum_weights = cum_weights
        self.buffer: list[Op] = []

    def next(self) -> Op:
        if not self.buffer:
            keys = self.rng.choices(range(KEYS), cum_weights=self.cum_weights, k=self.CHUNK)
            writes = [self.rng.random() >= READ_FRACTION for _ in keys]
            self.buffer = list(zip(writes, keys, strict=True))[::-1]
        return self.buffer.pop()


class Clients:
    """The CLIENTS clients of one side: each keeps its seeded op stream across segments,
    so a side's segments together are one uninterrupted trace."""

    def __init__(self) -> None:
        cum_weights = zipf_cum_weights(KEYS, ZIPF_S)
        self.ops = [OpStream(i, cum_weights) for i in range(CLIENTS)]
        self.values = [random.Random(SEED - i) for i in range(CLIENTS)]

    async def run(self, get: Get, put: Put, duration_s: float, measure: Measure | None) -> None:
        """CLIENTS closed loops for `duration_s`; recorded into `measure` unless None."""
        started = time.perf_counter()
        end = started + duration_s

        async def client(index: int) -> None:
            ops, values = self.ops[index], self.values[index]
            while (began := time.perf_counter()) < end:
                is_write, key = ops.next()
                value = value_for(values) if is_write else ""
                ok = await (put(index, key, value) if is_write else get(index, key))
                if measure is None:
                    continue
                measure.trace[index].append((is_write, key))
                if not ok:
                    measure.errors += 1
                else:
                    done = time.perf_counter() - began
                    (measure.put_s if is_write else measure.get_s).append(done)

        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        if measure is not None:
            measure.elapsed_s += time.perf_counter() - started


async def run_workload(get: Get, put: Put, duration_s: float, warmup_s: float) -> Measure:
    """CLIENTS closed loops for warmup_s (discarded) + duration_s (measured)."""
    clients, measure = Clients(), Measure(trace=[[] for _ in range(CLIENTS)])
    await clients.run(get, put, warmup_s, None)
    await clients.run(get, put, duration_s, measure)
    return measure


def reference_coherent_hit_ratio(trace: list[list[Op]], capacity: int) -> float:
    """Hit ratio of reads replaying the same ops through an ideal coherent cluster: one LRU
    of `capacity` per node (client i on node i % NODES, as in the run), a write keeping
    the key on its node and dropping it on every other node (MESI's invalidation), with no
    lease, no message and no race. The gap to `reference_lru_hit_ratio` is what splitting
    the cache over nodes and invalidating costs by itself; the gap from it to the measured
    ratio is the protocol's own."""
    lrus: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(NODES)]
    hits = reads = 0
    for step in itertools.zip_longest(*trace):
        for client, op in enumerate(step):
            if op is None:
                continue
            is_write, key = op
            lru = lrus[client % NODES]
            if is_write:
                for other in lrus:
                    if other is not lru:
                        other.pop(key, None)
            else:
                reads += 1
                hits += key in lru
            lru[key] = None
            lru.move_to_end(key)
            if len(lru) > capacity:
                lru.popitem(last=False)
    return hits / reads if reads else 0.0


def reference_lru_hit_ratio(trace: list[list[Op]], capacity: int) -> float:
    """Hit ratio of reads replaying the clients' ops round-robin through one LRU."""
    return reference_routed_hit_ratio(trace, capacity, lambda key: "")


def reference_routed_hit_ratio(
    trace: list[list[Op]], capacity: int, home_of: Callable[[int], str]
) -> float:
    """Hit ratio of reads replaying the clients' ops round-robin through one LRU of
    `capacity` per home, every key on its home's LRU only: what home-routed clients can
    reach at best (one home for every key: one LRU)."""
    lrus: dict[str, OrderedDict[int, None]] = {}
    hits = reads = 0
    for step in itertools.zip_longest(*trace):
        for op in step:
            if op is None:
                continue
            is_write, key = op
            lru = lrus.setdefault(home_of(key), OrderedDict())
            if not is_write:
                reads += 1
                hits += key in lru
            lru[key] = None
            lru.move_to_end(key)
            if len(lru) > capacity:
                lru.popitem(last=False)
    return hits / reads if reads else 0.0


# -- the clients -----------------------------------------------------------------------


class ClusterCache:
    """GET/PUT /cache/{key}; client i on node i % n."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str]) -> None:
        self.session = session
        self.urls = urls

    def url_for(self, index: int, key: int) -> str:
        return f"{self.urls[index % len(self.urls)]}/cache/{key_name(key)}"

    async def get(self, index: int, key: int) -> bool:
        url = self.url_for(index, key)
        try:
            async with self.session.get(url) as resp:
                await resp.read()
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def put(self, index: int, key: int, value: str) -> bool:
        url = self.url_for(index, key)
        try:
            async with self.session.put(url, json={"value": value}) as resp:
                await resp.read()
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def stats(self) -> dict[str, int]:
        """STAT_COUNTERS summed over every node."""
        total = dict.fromkeys(STAT_COUNTERS, 0)
        for url in self.urls:
            async with self.session.get(url + "/cache/stats") as resp:
                body = await resp.json(content_type=None)
            for name in STAT_COUNTERS:
                total[name] += int(body.get(name, 0))
        return total


class HomeRoutedCache(ClusterCache):
    """The same requests, each sent to its key's home (learned once per key from
    `GET /ring?key=`, as a client library would cache it): every key lives in one node's
    memory, so the three capacities add up and writes invalidate nobody."""

    def __init__(self, session: aiohttp.ClientSession, urls: dict[str, str]) -> None:
        super().__init__(session, list(urls.values()))
        self.by_id = urls
        self.home_url: dict[int, str] = {}

    async def resolve(self) -> None:
        """Every key's home, asked of the first node (the nodes' rings agree)."""
        first = self.urls[0]
        for key in range(KEYS):
            async with self.session.get(f"{first}/ring", params={"key": key_name(key)}) as r:
                body = await r.json(content_type=None)
            self.home_url[key] = self.by_id[body["home"]]

    def url_for(self, index: int, key: int) -> str:
        return f"{self.home_url[key]}/cache/{key_name(key)}"


class RawRedis:
    """The second reference: plain GET/SET, no cache tier."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def get(self, index: int, key: int) -> bool:
        try:
            return await self.client.get(f"bench:raw:{key_name(key)}") is not None
        except (aioredis.RedisError, OSError):
            return False

    async def put(self, index: int, key: int, value: str) -> bool:
        try:
            return bool(await self.client.set(f"bench:raw:{key_name(key)}", value))
        except (aioredis.RedisError, OSError):
            return False

    async def preload(self) -> None:
        rng = random.Random(SEED)
        async with self.client.pipeline(transaction=False) as pipe:
            for key in range(KEYS):
                pipe.set(f"bench:raw:{key_name(key)}", value_for(rng))
            await pipe.execute()


async def preload_redis(redis_url: str, cluster_name: str) -> None:
    """Write every key into Redis in the cache store's layout (hash with val and ver)."""
    client = aioredis.Redis.from_url(redis_url)
    rng = random.Random(SEED)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for key in range(KEYS):
                name = f"{STORE_PREFIX}:{cluster_name}:cache:{key_name(key)}"
                pipe.execute_command("HSET", name, "val", value_for(rng), "ver", 1)
            await pipe.execute()
    finally:
        await client.aclose()


# -- clusters and runs -----------------------------------------------------------------


def start_cluster(workdir: Path, redis_url: str, capacity: int, name: str) -> LocalCluster:
    cluster = LocalCluster(
        role="cache",
        nodes=NODES,
        base_port=free_port_block(NODES),
        redis_url=redis_url,
        cluster_name=name,
        workdir=workdir,
        extra_env={**NODE_ENV, "CACHE_CAPACITY": str(capacity)},
        log_dir=workdir / "logs",
    )
    try:
        cluster.start(wait_ready_s=60)
    except BaseException:
        cluster.stop()  # never leave the nodes that did start behind
        raise
    return cluster


@dataclass
class Side:
    """One cluster under test: its clients, what was measured and its counters' deltas."""

    name: str
    capacity: int
    cache: ClusterCache
    clients: Clients = field(default_factory=Clients)
    measure: Measure = field(default_factory=lambda: Measure(trace=[[] for _ in range(CLIENTS)]))
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAT_COUNTERS, 0))

    async def segment(self, duration_s: float) -> None:
        before = await self.cache.stats()
        await self.clients.run(self.cache.get, self.cache.put, duration_s, self.measure)
        after = await self.cache.stats()
        for name in STAT_COUNTERS:
            self.counters[name] += after[name] - before[name]

    def report(self) -> dict[str, Any]:
        zero = dict.fromkeys(STAT_COUNTERS, 0)
        return {"capacity": self.capacity, **run_report(self.measure, zero, self.counters)}


def run_report(
    m: Measure, before: dict[str, int] | None, after: dict[str, int] | None
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "ops_per_s": round(m.per_s(m.get_s) + m.per_s(m.put_s), 1),
        "gets_per_s": round(m.per_s(m.get_s), 1),
        "puts_per_s": round(m.per_s(m.put_s), 1),
        "get_p50_ms": ms(m.get_s, 50),
        "get_p99_ms": ms(m.get_s, 99),
        "put_p50_ms": ms(m.put_s, 50),
        "put_p99_ms": ms(m.put_s, 99),
        "errors": m.errors,
    }
    if before is not None and after is not None:
        delta = {name: after[name] - before[name] for name in STAT_COUNTERS}
        reads = delta["hits"] + delta["misses"]
        report["hit_ratio"] = round(delta["hits"] / reads, 4) if reads else 0.0
        memory = delta["home_memory_reads"]
        report["reads_from_redis_fraction"] = round(memory / reads, 4) if reads else 0.0
        report["node_counters"] = delta
    return report


SIDES = (("cached", CAPACITY, False), ("home_routed", CAPACITY, True),
         ("pass", PASS_THROUGH_CAPACITY, False))  # fmt: skip


async def interleaved(workdir: Path, redis_url: str, duration_s: float) -> dict[str, Side]:
    """Every cluster up at once, measured in alternating segments, so that load from
    anything else on the machine falls on all alike."""
    clusters: list[LocalCluster] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        for name, cap, _ in SIDES:
            cluster_name = "bench-" + name.replace("_", "-")
            await preload_redis(redis_url, cluster_name)
            cluster = await asyncio.to_thread(
                start_cluster, workdir / name, redis_url, cap, cluster_name
            )
            clusters.append(cluster)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.sleep(1.0)  # let heartbeats settle the rings
            sides: dict[str, Side] = {}
            for (name, cap, routed), cluster in zip(SIDES, clusters, strict=True):
                if routed:
                    cache: ClusterCache = HomeRoutedCache(session, dict(cluster.urls))
                    await cast(HomeRoutedCache, cache).resolve()
                else:
                    cache = ClusterCache(session, list(cluster.urls.values()))
                sides[name] = Side(name, cap, cache)
            for side in sides.values():
                await side.clients.run(side.cache.get, side.cache.put, WARMUP_S, None)
            for _ in range(ROUNDS):
                for side in sides.values():
                    await side.segment(duration_s / ROUNDS)
    finally:
        await asyncio.gather(*(asyncio.to_thread(c.stop) for c in clusters))
    return sides


async def raw_run(redis_url: str, duration_s: float) -> dict[str, Any]:
    client = aioredis.Redis.from_url(redis_url, max_connections=64)
    try:
        raw = RawRedis(client)
        await raw.preload()
        measure = await run_workload(raw.get, raw.put, duration_s, WARMUP_S)
    finally:
        await client.aclose()
    return run_report(measure, None, None)


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    duration_s = 2.0 if args.quick else args.duration
    redis = RedisServer(data_dir=workdir / "redis", appendonly=True, appendfsync="everysec")
    redis.start()
    started = time.monotonic()
    try:
        log(
            f"cached and home-routed (capacity {CAPACITY}) and pass-through (capacity "
            f"{PASS_THROUGH_CAPACITY}) clusters, {WARMUP_S} s warm-up each, then {ROUNDS} "
            f"alternating segments of {duration_s / ROUNDS} s each"
        )
        sides = await interleaved(workdir, redis.url, duration_s)
        cached, passing = sides["cached"].report(), sides["pass"].report()
        routed_side = sides["home_routed"]
        routed = routed_side.report()
        trace = sides["cached"].measure
        homes = cast(HomeRoutedCache, routed_side.cache).home_url
        log("raw Redis GET/SET run")
        raw = await raw_run(redis.url, duration_s)
    finally:
        redis.stop()
    return {
        "redis_persistence": PERSISTENCE,
        "nodes": NODES,
        "workload": {
            "keys": KEYS,
            "zipf_s": ZIPF_S,
            "read_fraction": READ_FRACTION,
            "clients": CLIENTS,
            "value_bytes": VALUE_BYTES,
            "warmup_s": WARMUP_S,
            "duration_s": duration_s,
            "segments": ROUNDS,
        },
        "cached": cached,
        "home_routed": routed,
        "pass_through": passing,
        "raw_redis": raw,
        "reference_lru_hit_ratio": round(reference_lru_hit_ratio(trace.trace, CAPACITY), 4),
        "reference_coherent_hit_ratio": round(
            reference_coherent_hit_ratio(trace.trace, CAPACITY), 4
        ),
        "reference_home_routed_hit_ratio": round(
            reference_routed_hit_ratio(routed_side.measure.trace, CAPACITY, homes.__getitem__), 4
        ),
        "home_routed_reference_lru_hit_ratio": round(
            reference_lru_hit_ratio(routed_side.measure.trace, CAPACITY), 4
        ),
        "read_ops_ratio_vs_pass_through": ratio(cached["gets_per_s"], passing["gets_per_s"]),
        "home_routed_read_ops_ratio_vs_pass_through": ratio(
            routed["gets_per_s"], passing["gets_per_s"]
        ),
        "ops_ratio_vs_pass_through": ratio(cached["ops_per_s"], passing["ops_per_s"]),
        "ops_ratio_vs_raw_redis": ratio(cached["ops_per_s"], raw["ops_per_s"]),
        "wall_s": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(
        "cache_bench", __doc__, argv, duration=10.0, quick="2 s measured per run"
    )
    return common.main("cache_bench", args, bench)


if __name__ == "__main__":
    sys.exit(main())
