"""Queue throughput and end-to-end latency by route, against raw Redis Streams.

`python -m bench.queue_bench [--duration S] [--quick]` starts its own Redis (AOF,
appendfsync everysec, for both sides) and a 3-node queue cluster on free ports, then
prints one JSON document on stdout (progress and a summary table go to stderr). One
uvloop client process; both sides encode JSON with orjson.

Every case runs on fresh topics, once per *route*, and once against raw Redis Streams in
the same run (the baseline):

* `owner`: every request goes to the topic's owner (`GET /ring?topic=`), so nothing is
  forwarded: the cost of HTTP, validation and the node's Redis commands;
* `non_owner`: every request goes to one node that does not own the topic, so every
  request is forwarded once: the above plus one node-to-node hop;
* `round_robin` (paced case only): requests spread over the three nodes, as behind a
  load balancer (two thirds forwarded).

The cases:

1. *publish*: P producers in a closed loop (one request in flight each), one message or
   a batch of 100 (`messages: [...]`) per request, for `--duration` seconds. No consumer
   runs; afterwards the stream must hold exactly the acknowledged messages. Baseline:
   `XADD` (a batch is a pipeline of 100 XADDs).
2. *consume+ack*: a topic pre-filled with `DRAIN_MESSAGES` messages is drained by 4
   consumers, each consuming up to 100 (`block_ms` 100) and acking what it got in one
   request. msg/s = messages / time to drain. Baseline: `XREADGROUP COUNT 100 BLOCK 100`
   then `XACK` of the ids.
3. *paced end-to-end*: 16 producers publish 500 msg/s in total (one message per request)
   while the 4 consumers consume and ack, for `--duration` seconds. Every body carries
   the producer's `perf_counter()` at publish time; end-to-end is the time from just
   before the publish request to the consumer holding the message (before its ack). The
   issue's target is p50 under 5 ms at this rate.

`lost` counts messages acknowledged to a producer and never consumed (must be 0),
`duplicates` extra deliveries (at-least-once allows them; none are expected here). The
ratio is cluster msg/s over baseline msg/s from the same run: the machine is shared, so
compare ratios rather than absolute figures across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from bench import common
from bench.common import free_port_block, ms
from distcluster_worker.runner.cluster import LocalCluster
from distcluster_worker.runner.redis_server import RedisServer

NODES = 3
CONSUMERS = 4
CONSUME_MAX = 100
PUBLISH_BATCH = 100
BLOCK_MS = 100
VISIBILITY_MS = 60_000
DRAIN_S = 15.0
DRAIN_MESSAGES = 20_000
QUICK_DRAIN_MESSAGES = 2_000
PACED_RATE = 500.0
PERSISTENCE = "appendonly yes, appendfsync everysec"
NODE_ENV = {"LOG_LEVEL": "WARNING"}
GROUP = "bench"
OWNER, NON_OWNER, ROUND_ROBIN = "owner", "non_owner", "round_robin"

log = common.make_log("queue_bench")


@dataclass(frozen=True)
class Load:
    """P producers, `batch` messages a request, an optional total rate (msg/s)."""

    producers: int
    batch: int
    rate: float | None = None

    @property
    def name(self) -> str:
        paced = f"-paced{int(self.rate)}" if self.rate else ""
        return f"p{self.producers}-b{self.batch}{paced}"


PUBLISH_LOADS = (
    Load(1, 1),
    Load(16, 1),
    Load(1, PUBLISH_BATCH),
    Load(16, PUBLISH_BATCH),
)
PACED_LOAD = Load(16, 1, PACED_RATE)

Publish = Callable[[int, list[dict[str, Any]]], Awaitable[int]]
# A consume answers when it received its messages (before acking them) and their bodies.
Got = tuple[float, list[dict[str, Any]]]
Consume = Callable[[int], Awaitable[Got | None]]


@dataclass
class Measure:
    """What one side of one case observed."""

    publish_latencies_s: list[float] = field(default_factory=list)
    e2e_latencies_s: list[float] = field(default_factory=list)
    published: set[str] = field(default_factory=set)
    consumed: set[str] = field(default_factory=set)
    duplicates: int = 0
    publish_errors: int = 0
    consume_errors: int = 0
    elapsed_s: float = 0.0
    drain_s: float = 0.0
    stored: int | None = None
    last_progress: float = 0.0
    producers_done_at: float = 0.0

    def msgs_per_s(self, count: int) -> float:
        return count / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def lost(self) -> int:
        """Acknowledged but never consumed; without consumers, acknowledged but not stored."""
        if self.stored is not None and not self.consumed:
            return max(0, len(self.published) - self.stored)
        return len(self.published - self.consumed)


# -- load generation -------------------------------------------------------------------


def make_bodies(producer: int, seq: itertools.count[int], batch: int) -> list[dict[str, Any]]:
    now = time.perf_counter()
    return [{"ts": now, "key": f"{producer}:{next(seq)}"} for _ in range(batch)]


async def producer_loop(
    publish: Publish, index: int, load: Load, end: float, measure: Measure
) -> None:
    seq = itertools.count()
    interval = load.producers * load.batch / load.rate if load.rate else 0.0
    next_at = time.perf_counter() + random.uniform(0, interval)
    while time.perf_counter() < end:
        if interval:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += interval
        bodies = make_bodies(index, seq, load.batch)
        began = time.perf_counter()
        if await publish(index, bodies) == len(bodies):
            measure.publish_latencies_s.append(time.perf_counter() - began)
            measure.published.update(b["key"] for b in bodies)
        else:
            measure.publish_errors += 1


def record(got: Got, measure: Measure) -> None:
    """Count what a consumer got; pre-filled bodies (ts 0) have no end-to-end time."""
    now, bodies = got
    for body in bodies:
        key = str(body.get("key"))
        if key in measure.consumed:
            measure.duplicates += 1
            continue
        measure.consumed.add(key)
        measure.last_progress = time.perf_counter()
        if body["ts"]:
            measure.e2e_latencies_s.append(now - float(body["ts"]))


def drained(m: Measure, producing: asyncio.Event) -> bool:
    """Producers are done and everything is consumed, or nothing came for DRAIN_S."""
    if not producing.is_set():
        return False
    quiet_since = max(m.last_progress, m.producers_done_at)
    return not m.published - m.consumed or time.perf_counter() - quiet_since > DRAIN_S


async def consumer_loop(consume: Consume, index: int, producing: asyncio.Event, m: Measure) -> None:
    while not drained(m, producing):
        got = await consume(index)
        if got is None:
            m.consume_errors += 1
            await asyncio.sleep(0.01)
            continue
        record(got, m)


async def produce(publish: Publish, load: Load, duration_s: float, measure: Measure) -> None:
    start = time.perf_counter()
    end = start + duration_s
    await asyncio.gather(
        *(producer_loop(publish, i, load, end, measure) for i in range(load.producers))
    )
    measure.elapsed_s = time.perf_counter() - start


async def run_consumers(consume: Consume, measure: Measure, producing: asyncio.Event) -> None:
    await asyncio.gather(*(consumer_loop(consume, i, producing, measure) for i in range(CONSUMERS)))


async def run_paced(publish: Publish, consume: Consume, load: Load, duration_s: float) -> Measure:
    """Producers at `load.rate` while the consumers consume and ack."""
    measure = Measure()
    done = asyncio.Event()
    consumers = asyncio.create_task(run_consumers(consume, measure, done))
    await produce(publish, load, duration_s, measure)
    measure.producers_done_at = time.perf_counter()
    done.set()
    await consumers
    measure.drain_s = time.perf_counter() - measure.producers_done_at
    return measure


async def run_drain(consume: Consume, keys: list[str]) -> Measure:
    """Consumers drain a pre-filled topic holding `keys`; elapsed is the time to drain."""
    measure = Measure(published=set(keys))
    done = asyncio.Event()
    done.set()
    start = measure.producers_done_at = time.perf_counter()
    await run_consumers(consume, measure, done)
    measure.elapsed_s = max(0.0, measure.last_progress - start)
    return measure


# -- the two sides ---------------------------------------------------------------------


class ClusterQueue:
    """The queue API through `urls`: publishes round-robin over them, consumer i on i % n."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str], topic: str) -> None:
        self.session = session
        self.urls = urls
        self.topic = topic
        self._next = itertools.count()

    async def post(self, url: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(url + path, data=orjson.dumps(body), headers=JSON) as resp:
            return resp.status, orjson.loads(await resp.read())

    async def publish(self, index: int, bodies: list[dict[str, Any]]) -> int:
        url = self.urls[next(self._next) % len(self.urls)]
        payload: dict[str, Any] = {"topic": self.topic}
        payload.update({"message": bodies[0]} if len(bodies) == 1 else {"messages": bodies})
        try:
            status, answer = await self.post(url, "/queue/publish", payload)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return 0
        return len(answer.get("ids", [])) if status == 200 else 0

    async def consume(self, index: int) -> Got | None:
        url = self.urls[index % len(self.urls)]
        body = {
            "topic": self.topic,
            "group": GROUP,
            "consumer": f"c{index}",
            "max": CONSUME_MAX,
            "visibility_ms": VISIBILITY_MS,
            "block_ms": BLOCK_MS,
        }
        try:
            status, answer = await self.post(url, "/queue/consume", body)
            received = time.perf_counter()
            if status != 200:
                return None
            messages = answer.get("messages", [])
            if messages:
                ack = {"topic": self.topic, "group": GROUP, "ids": [x["id"] for x in messages]}
                status, _ = await self.post(url, "/queue/ack", ack)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        return (received, [x["body"] for x in messages]) if status == 200 else None

    async def stored(self) -> int | None:
        try:
            async with self.session.get(f"{self.urls[0]}/queue/{self.topic}/stats") as resp:
                return int(orjson.loads(await resp.read())["length"])
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, TypeError):
            return None


JSON = {"Content-Type": "application/json"}


class RawStreams:
    """The baseline: XADD (pipelined for a batch), XREADGROUP + XACK."""

    def __init__(self, client: aioredis.Redis, stream: str) -> None:
        self.client = client
        self.stream = stream

    async def setup(self) -> None:
        await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)

    async def publish(self, index: int, bodies: list[dict[str, Any]]) -> int:
        try:
            if len(bodies) == 1:
                await self.client.xadd(self.stream, {"body": orjson.dumps(bodies[0])})
                return 1
            async with self.client.pipeline(transaction=False) as pipe:
                for body in bodies:
                    pipe.xadd(self.stream, {"body": orjson.dumps(body)})
                return len(await pipe.execute())
        except (aioredis.RedisError, OSError):
            return 0

    async def consume(self, index: int) -> Got | None:
        try:
            got: Any = await self.client.xreadgroup(
                GROUP, f"c{index}", {self.stream: ">"}, count=CONSUME_MAX, block=BLOCK_MS
            )
            received = time.perf_counter()
            entries: list[tuple[bytes, dict[bytes, bytes]]] = got[0][1] if got else []
            if entries:
                await self.client.xack(self.stream, GROUP, *[e[0] for e in entries])
        except (aioredis.RedisError, OSError):
            return None
        return received, [orjson.loads(fields[b"body"]) for _, fields in entries]

    async def stored(self) -> int | None:
        return int(await self.client.xlen(self.stream))


# -- the cluster under test ------------------------------------------------------------


def start_cluster(workdir: Path, redis_url: str) -> LocalCluster:
    cluster = LocalCluster(
        role="queue",
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


async def topic_owner(session: aiohttp.ClientSession, url: str, topic: str) -> str | None:
    try:
        async with session.get(url + "/ring", params={"topic": topic}) as resp:
            body = orjson.loads(await resp.read())
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None
    owner = body.get("owner") if isinstance(body, dict) else None
    return owner if isinstance(owner, str) else None


@dataclass
class Bench:
    """What every case needs: the client session, the raw client and the node URLs."""

    session: aiohttp.ClientSession
    redis: aioredis.Redis
    urls: dict[str, str]
    duration_s: float
    drain_messages: int

    async def route(self, kind: str, route: str) -> tuple[ClusterQueue, dict[str, Any]]:
        """A fresh topic and a client sending every request along `route`."""
        topic = f"bench-{kind}-{route}-{uuid.uuid4().hex[:6]}"
        owner = await topic_owner(self.session, next(iter(self.urls.values())), topic)
        if owner not in self.urls:
            raise RuntimeError(f"no owner for {topic}: is the ring up?")
        others = sorted(n for n in self.urls if n != owner)
        nodes = {OWNER: [owner], NON_OWNER: others[:1], ROUND_ROBIN: sorted(self.urls)}[route]
        queue = ClusterQueue(self.session, [self.urls[n] for n in nodes], topic)
        return queue, {"route": route, "owner": owner, "nodes": nodes}

    async def raw(self, kind: str) -> RawStreams:
        raw = RawStreams(self.redis, f"bench:raw:{kind}:{uuid.uuid4().hex[:6]}")
        await raw.setup()
        return raw


# -- the report ------------------------------------------------------------------------


def side_report(m: Measure, count: int, **extra: Any) -> dict[str, Any]:
    report = {
        "msgs_per_s": round(m.msgs_per_s(count), 1),
        "publish_p50_ms": ms(m.publish_latencies_s, 50),
        "publish_p99_ms": ms(m.publish_latencies_s, 99),
        "e2e_p50_ms": ms(m.e2e_latencies_s, 50),
        "e2e_p99_ms": ms(m.e2e_latencies_s, 99),
        "published": len(m.published),
        "consumed": len(m.consumed),
        "lost": m.lost,
        "duplicates": m.duplicates,
        "stored": m.stored,
        "publish_errors": m.publish_errors,
        "consume_errors": m.consume_errors,
        "drain_s": round(m.drain_s, 2),
    }
    return {**extra, **report}


def with_ratios(case: dict[str, Any], paced: bool = False) -> dict[str, Any]:
    base = case["baseline"]["msgs_per_s"]
    for side in case["routes"].values():
        side["ratio"] = None if paced or not base else round(side["msgs_per_s"] / base, 3)
    return case


# -- the cases -------------------------------------------------------------------------


async def publish_case(b: Bench, load: Load) -> dict[str, Any]:
    log(f"publish {load.name}: baseline, owner, non-owner ({b.duration_s} s each)")
    case: dict[str, Any] = {"name": f"publish-{load.name}", "kind": "publish", "routes": {}}
    case.update(producers=load.producers, batch=load.batch)
    raw = await b.raw("publish")
    m = Measure()
    await produce(raw.publish, load, b.duration_s, m)
    m.stored = await raw.stored()
    case["baseline"] = side_report(m, len(m.published))
    for route in (OWNER, NON_OWNER):
        queue, where = await b.route("publish", route)
        m = Measure()
        await produce(queue.publish, load, b.duration_s, m)
        m.stored = await queue.stored()
        case["routes"][route] = side_report(m, len(m.published), **where)
    return with_ratios(case)


async def prefill(publish: Publish, count: int) -> list[str]:
    """Publish `count` messages in batches of 100 from 4 tasks; the keys acknowledged."""
    measure = Measure()
    seq = itertools.count()

    async def one(index: int) -> None:
        while (n := next(seq)) * PUBLISH_BATCH < count:
            size = min(PUBLISH_BATCH, count - n * PUBLISH_BATCH)
            bodies = [{"ts": 0.0, "key": f"pre:{n}:{i}"} for i in range(size)]
            if await publish(index, bodies) == size:
                measure.published.update(b["key"] for b in bodies)

    await asyncio.gather(*(one(i) for i in range(4)))
    return sorted(measure.published)


async def drain_case(b: Bench) -> dict[str, Any]:
    n = b.drain_messages
    log(f"consume+ack: drain {n} messages, 4 consumers, baseline, owner, non-owner")
    case: dict[str, Any] = {"name": "consume-ack-c4-max100", "kind": "consume_ack", "routes": {}}
    case.update(consumers=CONSUMERS, max=CONSUME_MAX, messages=n)
    raw = await b.raw("drain")
    keys = await prefill(raw.publish, n)
    m = await run_drain(raw.consume, keys)
    case["baseline"] = side_report(m, len(m.consumed))
    for route in (OWNER, NON_OWNER):
        queue, where = await b.route("drain", route)
        keys = await prefill(
            ClusterQueue(b.session, [b.urls[where["owner"]]], queue.topic).publish, n
        )
        m = await run_drain(queue.consume, keys)
        case["routes"][route] = side_report(m, len(m.consumed), **where)
    return with_ratios(case)


async def paced_case(b: Bench) -> dict[str, Any]:
    load = PACED_LOAD
    log(f"paced {load.name}: baseline, owner, non-owner, round-robin ({b.duration_s} s each)")
    case: dict[str, Any] = {"name": f"e2e-{load.name}", "kind": "paced", "routes": {}}
    case.update(producers=load.producers, batch=1, rate=load.rate, consumers=CONSUMERS)
    raw = await b.raw("paced")
    m = await run_paced(raw.publish, raw.consume, load, b.duration_s)
    case["baseline"] = side_report(m, len(m.published))
    for route in (OWNER, NON_OWNER, ROUND_ROBIN):
        queue, where = await b.route("paced", route)
        m = await run_paced(queue.publish, queue.consume, load, b.duration_s)
        case["routes"][route] = side_report(m, len(m.published), **where)
    return with_ratios(case, paced=True)


async def run_cases(b: Bench) -> list[dict[str, Any]]:
    cases = [await publish_case(b, load) for load in PUBLISH_LOADS]
    cases.append(await drain_case(b))
    cases.append(await paced_case(b))
    return cases


def summary(cases: list[dict[str, Any]]) -> str:
    """One line per case and route, for the log (the JSON has everything)."""
    lines = ["case | route | msg/s | raw msg/s | ratio | pub p50/p99 ms | e2e p50/p99 ms | lost"]
    for case in cases:
        base = case["baseline"]
        rows = [("baseline", base), *case["routes"].items()]
        for route, side in rows:
            lines.append(
                f"{case['name']} | {route} | {side['msgs_per_s']} | {base['msgs_per_s']} | "
                f"{side.get('ratio')} | {side['publish_p50_ms']}/{side['publish_p99_ms']} | "
                f"{side['e2e_p50_ms']}/{side['e2e_p99_ms']} | {side['lost']}"
            )
    return "\n".join(lines)


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    duration_s = 1.0 if args.quick else args.duration
    redis = RedisServer(data_dir=workdir / "redis", appendonly=True, appendfsync="everysec")
    redis.start()
    cluster: LocalCluster | None = None
    redis_client = aioredis.Redis.from_url(redis.url, max_connections=256)
    try:
        cluster = await asyncio.to_thread(start_cluster, workdir, redis.url)
        await asyncio.sleep(1.0)  # let heartbeats settle the ring
        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            drain = QUICK_DRAIN_MESSAGES if args.quick else DRAIN_MESSAGES
            cases = await run_cases(
                Bench(session, redis_client, dict(cluster.urls), duration_s, drain)
            )
        log("summary\n" + summary(cases))
        return {
            "redis_persistence": PERSISTENCE,
            "nodes": NODES,
            "duration_s_per_case": duration_s,
            "client_process": "one uvloop process, aiohttp keep-alive, orjson on both sides",
            "cases": cases,
            "wall_s": round(time.monotonic() - started, 1),
        }
    finally:
        await redis_client.aclose()
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args("queue_bench", __doc__, argv, duration=5.0, quick="1 s cases")
    return common.main("queue_bench", args, bench)


if __name__ == "__main__":
    sys.exit(main())
