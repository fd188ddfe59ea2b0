"""Queue publish throughput and end-to-end latency, against raw Redis Streams.

`python -m bench.queue_bench [--duration S] [--quick]` starts its own Redis (AOF,
appendfsync everysec, for both sides) and a 3-node queue cluster on free ports, then
prints one JSON document on stdout (progress goes to stderr). One uvloop client process.

Each case runs P producers and 4 consumers on a fresh topic for `--duration` seconds.
Producers publish in a closed loop (one request in flight each), one message or a batch
(`messages: [...]` of 50) per request, round-robin over the three nodes; consumer i talks
to node i % 3, consumes (`max` 100, `block_ms` 100) and acks what it got. So about two
thirds of the requests are forwarded to the topic's owner, as behind a load balancer.
One paced case publishes 500 msg/s in total (16 producers, one message per request), the
rate at which the issue sets its end-to-end target. Every body carries the producer's
`perf_counter()` at publish time; *end-to-end* is the time from just before the publish
request to the consumer holding the message (before its ack).

When the producers stop, the consumers drain for up to `DRAIN_S`; `lost` is the number of
messages published with a 200 answer and never consumed (must be 0), `duplicates` the
extra deliveries (allowed by at-least-once, expected 0 here).

The baseline, run right after each cluster case with the same client counts, batch sizes
and pacing, is redis.asyncio against the same Redis: `XADD` (a batch is a pipeline of
XADDs), `XREADGROUP ... COUNT 100 BLOCK 100` then `XACK`. It has no forwarding, no
validation, no idempotency, no redelivery of idle entries, no HTTP, so the ratio
(cluster msg/s / raw msg/s) is the price of those. For the paced case both sides publish
the same rate; compare their end-to-end p50/p99, not their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
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
from bench.common import free_port_block, ms
from distcluster_worker.runner.cluster import LocalCluster
from distcluster_worker.runner.redis_server import RedisServer

NODES = 3
CONSUMERS = 4
CONSUME_MAX = 100
BLOCK_MS = 100
VISIBILITY_MS = 60_000
DRAIN_S = 15.0
PACED_RATE = 500.0
PERSISTENCE = "appendonly yes, appendfsync everysec"
NODE_ENV = {"LOG_LEVEL": "WARNING"}
GROUP = "bench"

log = common.make_log("queue_bench")


@dataclass(frozen=True)
class Case:
    """P producers, `batch` messages a request, optional total rate (msg/s)."""

    producers: int
    batch: int
    rate: float | None = None

    @property
    def name(self) -> str:
        paced = f"-paced{int(self.rate)}" if self.rate else ""
        return f"p{self.producers}-b{self.batch}{paced}"


CASES = (Case(1, 1), Case(16, 1), Case(1, 50), Case(16, 50), Case(16, 1, PACED_RATE))

Publish = Callable[[int, list[dict[str, Any]]], Awaitable[int]]
Consume = Callable[[int], Awaitable[list[dict[str, Any]] | None]]


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
    publish_elapsed_s: float = 0.0
    drain_s: float = 0.0

    @property
    def msgs_per_s(self) -> float:
        return len(self.published) / self.publish_elapsed_s if self.publish_elapsed_s else 0.0

    @property
    def lost(self) -> int:
        return len(self.published - self.consumed)


# -- load generation -------------------------------------------------------------------


def make_bodies(producer: int, seq: itertools.count[int], batch: int) -> list[dict[str, Any]]:
    now = time.perf_counter()
    return [{"ts": now, "key": f"{producer}:{next(seq)}"} for _ in range(batch)]


async def producer_loop(
    publish: Publish, index: int, case: Case, end: float, measure: Measure
) -> None:
    seq = itertools.count()
    interval = case.producers * case.batch / case.rate if case.rate else 0.0
    next_at = time.perf_counter() + random.uniform(0, interval)
    while time.perf_counter() < end:
        if interval:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += interval
        bodies = make_bodies(index, seq, case.batch)
        began = time.perf_counter()
        if await publish(index, bodies) == len(bodies):
            measure.publish_latencies_s.append(time.perf_counter() - began)
            measure.published.update(b["key"] for b in bodies)
        else:
            measure.publish_errors += 1


def record(bodies: list[dict[str, Any]], measure: Measure) -> None:
    now = time.perf_counter()
    for body in bodies:
        key = str(body.get("key"))
        if key in measure.consumed:
            measure.duplicates += 1
            continue
        measure.consumed.add(key)
        measure.e2e_latencies_s.append(now - float(body["ts"]))


async def consumer_loop(
    consume: Consume, index: int, producing: asyncio.Event, give_up: list[float], m: Measure
) -> None:
    """Consume until producers are done and everything published is consumed (or give up)."""
    while True:
        if producing.is_set() and (
            not m.published - m.consumed or time.perf_counter() > give_up[0]
        ):
            return
        got = await consume(index)
        if got is None:
            m.consume_errors += 1
            await asyncio.sleep(0.01)
            continue
        record(got, m)


async def run_case(publish: Publish, consume: Consume, case: Case, duration_s: float) -> Measure:
    measure = Measure()
    done = asyncio.Event()
    give_up = [float("inf")]
    consumers = [
        asyncio.create_task(consumer_loop(consume, i, done, give_up, measure))
        for i in range(CONSUMERS)
    ]
    start = time.perf_counter()
    end = start + duration_s
    await asyncio.gather(
        *(producer_loop(publish, i, case, end, measure) for i in range(case.producers))
    )
    measure.publish_elapsed_s = time.perf_counter() - start
    drain_start = time.perf_counter()
    give_up[0] = drain_start + DRAIN_S
    done.set()
    await asyncio.gather(*consumers)
    measure.drain_s = time.perf_counter() - drain_start
    return measure


# -- the two sides ---------------------------------------------------------------------


class ClusterQueue:
    """Publish round-robin over all nodes; consumer i on node i % n."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str], topic: str) -> None:
        self.session = session
        self.urls = urls
        self.topic = topic
        self._next = itertools.count()

    async def post(self, url: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with self.session.post(url + path, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    async def publish(self, index: int, bodies: list[dict[str, Any]]) -> int:
        url = self.urls[next(self._next) % len(self.urls)]
        payload: dict[str, Any] = {"topic": self.topic}
        payload.update({"message": bodies[0]} if len(bodies) == 1 else {"messages": bodies})
        try:
            status, answer = await self.post(url, "/queue/publish", payload)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return 0
        return len(answer.get("ids", [])) if status == 200 else 0

    async def consume(self, index: int) -> list[dict[str, Any]] | None:
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
            if status != 200:
                return None
            messages = answer.get("messages", [])
            if messages:
                ack = {"topic": self.topic, "group": GROUP, "ids": [x["id"] for x in messages]}
                status, _ = await self.post(url, "/queue/ack", ack)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None
        return [x["body"] for x in messages] if status == 200 else None


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
                await self.client.xadd(self.stream, {"body": json.dumps(bodies[0])})
                return 1
            async with self.client.pipeline(transaction=False) as pipe:
                for body in bodies:
                    pipe.xadd(self.stream, {"body": json.dumps(body)})
                return len(await pipe.execute())
        except (aioredis.RedisError, OSError):
            return 0

    async def consume(self, index: int) -> list[dict[str, Any]] | None:
        try:
            got: Any = await self.client.xreadgroup(
                GROUP, f"c{index}", {self.stream: ">"}, count=CONSUME_MAX, block=BLOCK_MS
            )
            entries: list[tuple[bytes, dict[bytes, bytes]]] = got[0][1] if got else []
            if entries:
                await self.client.xack(self.stream, GROUP, *[e[0] for e in entries])
        except (aioredis.RedisError, OSError):
            return None
        return [json.loads(fields[b"body"]) for _, fields in entries]


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
            body = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None
    owner = body.get("owner") if isinstance(body, dict) else None
    return owner if isinstance(owner, str) else None


# -- the report ------------------------------------------------------------------------


def side_report(m: Measure) -> dict[str, Any]:
    return {
        "msgs_per_s": round(m.msgs_per_s, 1),
        "publish_p50_ms": ms(m.publish_latencies_s, 50),
        "publish_p99_ms": ms(m.publish_latencies_s, 99),
        "e2e_p50_ms": ms(m.e2e_latencies_s, 50),
        "e2e_p99_ms": ms(m.e2e_latencies_s, 99),
        "published": len(m.published),
        "consumed": len(m.consumed),
        "lost": m.lost,
        "duplicates": m.duplicates,
        "publish_errors": m.publish_errors,
        "consume_errors": m.consume_errors,
        "drain_s": round(m.drain_s, 2),
    }


def case_report(case: Case, owner: str | None, ours: Measure, base: Measure) -> dict[str, Any]:
    ratio = ours.msgs_per_s / base.msgs_per_s if base.msgs_per_s else None
    return {
        "name": case.name,
        "producers": case.producers,
        "consumers": CONSUMERS,
        "batch": case.batch,
        "target_rate": case.rate,
        "topic_owner": owner,
        "cluster": side_report(ours),
        "baseline": side_report(base),
        "ratio_msgs_per_s": round(ratio, 4) if ratio is not None and not case.rate else None,
    }


async def one_case(
    session: aiohttp.ClientSession,
    redis_client: aioredis.Redis,
    urls: list[str],
    case: Case,
    duration_s: float,
) -> dict[str, Any]:
    topic = f"bench-{case.name}-{uuid.uuid4().hex[:6]}"
    owner = await topic_owner(session, urls[0], topic)
    log(f"case {case.name} (owner {owner}): cluster, then baseline ({duration_s} s each)")
    ours = ClusterQueue(session, urls, topic)
    mine = await run_case(ours.publish, ours.consume, case, duration_s)
    raw = RawStreams(redis_client, f"bench:raw:{topic}")
    await raw.setup()
    theirs = await run_case(raw.publish, raw.consume, case, duration_s)
    return case_report(case, owner, mine, theirs)


async def run_cases(
    cluster: LocalCluster, redis_url: str, duration_s: float
) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    redis_client = aioredis.Redis.from_url(redis_url, max_connections=256)
    urls = list(cluster.urls.values())
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            return [await one_case(session, redis_client, urls, c, duration_s) for c in CASES]
    finally:
        await redis_client.aclose()


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    duration_s = 1.0 if args.quick else args.duration
    redis = RedisServer(data_dir=workdir / "redis", appendonly=True, appendfsync="everysec")
    redis.start()
    cluster: LocalCluster | None = None
    try:
        cluster = await asyncio.to_thread(start_cluster, workdir, redis.url)
        await asyncio.sleep(1.0)  # let heartbeats settle the ring
        started = time.monotonic()
        cases = await run_cases(cluster, redis.url, duration_s)
        return {
            "redis_persistence": PERSISTENCE,
            "nodes": NODES,
            "duration_s_per_case": duration_s,
            "client_process": "one uvloop process, aiohttp keep-alive, publish round-robin",
            "cases": cases,
            "wall_s": round(time.monotonic() - started, 1),
        }
    finally:
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args("queue_bench", __doc__, argv, duration=5.0, quick="1 s cases")
    return common.main("queue_bench", args, bench)


if __name__ == "__main__":
    sys.exit(main())
