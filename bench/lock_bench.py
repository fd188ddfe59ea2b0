"""Lock manager throughput, latency and failover, against a raw Redis lock baseline.

`python -m bench.lock_bench [--duration S] [--quick] [--cases ...] [--transports ...]
[--failover-rounds N]` starts its own Redis (AOF, appendfsync everysec: the persistence
both sides run with) and a 3-node lock_manager cluster on free ports, then prints one JSON
document on stdout (progress goes to stderr).

A *cycle* is acquire then release. Each case runs N concurrent clients for `--duration`
seconds, either on N distinct resources or all on one resource (with a large `wait_ms`, so
waiters queue and the lock is handed over), in `SEGMENTS` segments alternating with the
baseline's (so the ratio is not skewed by load that came and went in between). The
client sends to the leader it finds on
`/raft/status`, as etcd's clients follow the leader; one extra case (`*-spread`) sends
round-robin over the three nodes, as a load balancer would, so two thirds of the requests
are forwarded by a follower: the price of "any node accepts any request". The client
process runs on uvloop, for the cluster and the baseline alike, and reaches the cluster
through `bench.lean_http` (one prepared write per request, httptools parsing, orjson),
because aiohttp's client spent as much CPU per cycle as the leader, on the cores the
cluster runs on;
`--http-client aiohttp` measures with an aiohttp session instead.

The baseline is the usual single-Redis lock with redis.asyncio: `SET key token NX PX ttl`,
retried every 1 ms while taken, released by a compare-and-delete Lua script. It has no
fencing, no FIFO hand-over, no deadlock detection and no replication, so the ratio is the
price of those, not a like-for-like race.

Transports A/B: a second 3-node cluster on the same Redis runs with the other
`RAFT_TRANSPORT` (default: the measured cluster streams, the compared one posts HTTP).
The cases of `AB_CASES` run on it right after the first cluster and before the baseline,
so the two transports are compared within the same minute of a shared, noisy machine;
each such case reports both under `transports`. The idle cluster costs the other one a
little CPU (heartbeats), in every case alike.

Failover: the leader is SIGKILLed (then restarted) `failover_rounds` times; a sample is the
time from the kill to the next successful acquire through a surviving node.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
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
from bench.lean_http import LeanHttp
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
TRANSPORTS = ("stream", "http")
"""`RAFT_TRANSPORT` of the cluster under test first, then the ones compared with it."""
SEGMENTS = 2
"""Each side of a case runs in this many alternating segments (cluster, baseline, cluster,
baseline...), `duration / SEGMENTS` each: load from other work then falls on both sides
alike, instead of on whichever ran in the minute it came."""
AB_CASES = ("distinct-64", "single-64")
"""Cases also run on the compared transports' clusters, right after the first one's."""
EXTRA_HELP = """lock_bench options besides --duration and --quick:
  --cases NAMES          comma list of case names (distinct-64,single-64,...); default all
  --transports T1,T2     RAFT_TRANSPORT of the measured cluster, then of compared ones
                         (default stream,http; "stream" alone skips the comparison)
  --failover-rounds N    SIGKILLs of the leader (default 10, 3 with --quick, 0 skips)
  --http-client C        lean (default: bench.lean_http) or aiohttp, the cluster's client"""
NODE_ENV = {"LOG_LEVEL": "WARNING"}
HTTP_CLIENTS = ("lean", "aiohttp")
"""How the load reaches the cluster: `bench.lean_http` (default) or an aiohttp session."""

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
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds spent during the case, by process group (see `cpu_seconds`)."""

    def add(self, other: Measure) -> None:
        """Count `other` (a later segment of the same case) in this one."""
        self.latencies_s.extend(other.latencies_s)
        self.errors += other.errors
        self.elapsed_s += other.elapsed_s
        for name, seconds in other.cpu_s.items():
            self.cpu_s[name] = self.cpu_s.get(name, 0.0) + seconds

    def cpu_us_per_cycle(self) -> dict[str, float]:
        cycles = len(self.latencies_s)
        return {k: round(v / cycles * 1e6) for k, v in self.cpu_s.items()} if cycles else {}

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

    # One bound for the whole case instead of a timer per request (see bench.lean_http).
    async with asyncio.timeout(duration_s + WAIT_MS / 1000 + 30):
        await asyncio.gather(*(client(i) for i in range(clients)))
    measure.elapsed_s = loop.time() - start
    return measure


def case_resources(prefix: str, pattern: str, clients: int) -> list[str]:
    if pattern == "single":
        return [f"{prefix}-hot"]
    return [f"{prefix}-{i}" for i in range(clients)]


Post = Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, Any]]]
"""(base URL, path, JSON body) -> (status, decoded JSON answer)."""


def aiohttp_post(session: aiohttp.ClientSession) -> Post:
    async def post(base_url: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with session.post(base_url + path, json=body) as resp:
            return resp.status, await resp.json(content_type=None)

    return post


class ClusterClient:
    """acquire+release cycles against the cluster, round-robin over `urls`."""

    def __init__(self, post: Post, urls: list[str]) -> None:
        self._post = post
        self.urls = urls
        self._next = itertools.count()

    def _url(self) -> str:
        return self.urls[next(self._next) % len(self.urls)]

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        return await self._post(self._url(), path, body)

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
        except (OSError, aiohttp.ClientError, ValueError):
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
    client = ClusterClient(aiohttp_post(session), survivors)
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
        "cpu_us_per_cycle": ours.cpu_us_per_cycle(),
        "baseline_cpu_us_per_cycle": base.cpu_us_per_cycle(),
    }


def failover_report(samples_s: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": round(percentile(samples_s, 50) * 1000, 1),
        "max_ms": round(max(samples_s) * 1000, 1) if samples_s else 0.0,
        "samples": len(samples_s),
        "samples_ms": [round(s * 1000, 1) for s in samples_s],
    }


@dataclass(frozen=True)
class Case:
    """One row of the report: how many clients, on which resources, sent where."""

    pattern: str  # "distinct" | "single"
    clients: int
    route: str = "leader"  # "leader" | "spread"

    @property
    def name(self) -> str:
        return f"{self.pattern}-{self.clients}" + ("-spread" if self.route == "spread" else "")


def all_cases(counts: tuple[int, ...]) -> list[Case]:
    cases = [Case(p, c) for p in PATTERNS for c in counts]
    return [*cases, Case("distinct", max(counts), "spread")]


def cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """User + system CPU seconds of each process so far, from /proc (Linux), and this
    client process's own (`client`); a process that cannot be read counts 0.

    CPU per cycle is the figure the shared, noisy machine disturbs least: throughput
    moves with whatever else runs, the work a cycle costs much less.
    """
    found = {"client": time.process_time()}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            found[name] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            found[name] = 0.0
    return found


async def measured(
    pids: dict[str, int | None], cycle: Cycle, case: Case, resources: list[str], duration_s: float
) -> Measure:
    """`run_case`, with the CPU each process group of `pids` spent on it."""
    before = cpu_seconds(pids)
    measure = await run_case(cycle, case.clients, resources, duration_s)
    after = cpu_seconds(pids)
    measure.cpu_s = {name: after[name] - before[name] for name in after}
    return measure


async def measure_cluster(
    session: aiohttp.ClientSession,
    post: Post,
    cluster: LocalCluster,
    redis_pid: int | None,
    case: Case,
    duration_s: float,
) -> Measure:
    leader = await wait_leader(session, cluster.urls)
    urls = [cluster.urls[leader]] if case.route == "leader" else list(cluster.urls.values())
    resources = case_resources(f"{cluster.cluster_name}-{case.name}", case.pattern, case.clients)
    pids = {"leader": cluster.nodes[leader].pid, "redis": redis_pid}
    pids.update({f"follower-{n}": p.pid for n, p in cluster.nodes.items() if n != leader})
    measure = await measured(pids, ClusterClient(post, urls).cycle, case, resources, duration_s)
    followers = [v for k, v in measure.cpu_s.items() if k.startswith("follower-")]
    measure.cpu_s = {
        "leader": measure.cpu_s["leader"],
        "followers": sum(followers),
        "redis": measure.cpu_s["redis"],
        "client": measure.cpu_s["client"],
    }
    return measure


def transport_report(ours: Measure, base: Measure) -> dict[str, Any]:
    return {
        "cycles_per_s": round(ours.cycles_per_s, 1),
        "p50_ms": round(ours.percentile_ms(50), 2),
        "p99_ms": round(ours.percentile_ms(99), 2),
        "errors": ours.errors,
        "ratio": round(ours.cycles_per_s / base.cycles_per_s, 4) if base.cycles_per_s else None,
        "cpu_us_per_cycle": ours.cpu_us_per_cycle(),
    }


async def run_cases(
    clusters: dict[str, LocalCluster],
    redis: RedisServer,
    duration_s: float,
    cases: list[Case],
    compare: tuple[str, ...],
    http_client: str = "lean",
) -> list[dict[str, Any]]:
    """Each case on the first cluster, then (for `compare` cases) on the others, then the
    baseline: back to back, so every ratio and the A/B come from the same minute."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=WAIT_MS / 1000 + 30)
    redis_client = aioredis.Redis.from_url(redis.url, max_connections=256)
    redis_pids = {"redis": redis.pid}
    primary, *others = clusters
    reports: list[dict[str, Any]] = []
    lean = LeanHttp()
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            post = lean.post if http_client == "lean" else aiohttp_post(session)
            base = RedisLockClient(redis_client)
            for case in cases:
                log(
                    f"case {case.name}: {', '.join(clusters)}, then baseline, in {SEGMENTS}"
                    f" alternating segments ({duration_s} s each side)"
                )
                names = [primary, *(others if case.name in compare else [])]
                ours = {name: Measure() for name in names}
                theirs = Measure()
                resources = case_resources(f"base-{case.name}", case.pattern, case.clients)
                segment_s = duration_s / SEGMENTS
                for _ in range(SEGMENTS):
                    for name in names:
                        ours[name].add(
                            await measure_cluster(
                                session, post, clusters[name], redis.pid, case, segment_s
                            )
                        )
                    theirs.add(await measured(redis_pids, base.cycle, case, resources, segment_s))
                report = case_report(case.name, case.clients, case.pattern, ours[primary], theirs)
                report["route"] = case.route
                if len(ours) > 1:
                    report["transports"] = {n: transport_report(m, theirs) for n, m in ours.items()}
                reports.append(report)
    finally:
        lean.close()
        await redis_client.aclose()
    return reports


async def run_failover(cluster: LocalCluster, rounds: int) -> list[float]:
    samples: list[float] = []
    async with aiohttp.ClientSession() as session:
        for round_no in range(rounds):
            samples.append(await failover_sample(cluster, session, round_no))
            log(f"failover {round_no + 1}/{rounds}: {samples[-1] * 1000:.0f} ms")
    return samples


def start_cluster(workdir: Path, redis_url: str, transport: str) -> LocalCluster:
    """A 3-node cluster sending Raft messages over `transport` (`RAFT_TRANSPORT`)."""
    cluster = LocalCluster(
        role="lock_manager",
        nodes=NODES,
        base_port=free_port_block(NODES),
        redis_url=redis_url,
        cluster_name=f"bench-{transport}",
        workdir=workdir,
        extra_env={**NODE_ENV, "RAFT_TRANSPORT": transport},
        log_dir=workdir / "logs",
    )
    try:
        cluster.start(wait_ready_s=60)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def log_tails(workdir: Path, lines: int = 20) -> None:
    """The end of every node log, on stderr: the temporary directory goes with the run."""
    for path in sorted(workdir.glob("*/logs/*.log")):
        tail = path.read_text(errors="replace").splitlines()[-lines:]
        log(f"----- {path.parent.parent.name}/{path.name} -----\n" + "\n".join(tail))


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    duration_s = 1.0 if args.quick else args.duration
    rounds = (
        args.failover_rounds
        if args.failover_rounds is not None
        else (3 if args.quick else FAILOVER_ROUNDS)
    )
    cases = [c for c in all_cases(CLIENT_COUNTS) if not args.cases or c.name in args.cases]
    redis = RedisServer(data_dir=workdir / "redis", appendonly=True, appendfsync="everysec")
    redis.start()
    clusters: dict[str, LocalCluster] = {}
    try:
        for transport in args.transports:
            (workdir / transport).mkdir()
            clusters[transport] = await asyncio.to_thread(
                start_cluster, workdir / transport, redis.url, transport
            )
        started = time.monotonic()
        reports = await run_cases(clusters, redis, duration_s, cases, AB_CASES, args.http_client)
        primary = args.transports[0]
        for name in args.transports[1:]:
            await asyncio.to_thread(clusters.pop(name).stop)
        samples = await run_failover(clusters[primary], rounds) if rounds else []
        return {
            "redis_persistence": PERSISTENCE,
            "nodes": NODES,
            "duration_s_per_case": duration_s,
            "client_process": f"one uvloop process, {args.http_client} HTTP keep-alive,"
            " leader-directed",
            "transport": primary,
            "compared_transports": {"with": args.transports[1:], "cases": list(AB_CASES)},
            "cases": reports,
            "failover": failover_report(samples),
            "wall_s": round(time.monotonic() - started, 1),
        }
    except BaseException:
        log_tails(workdir)
        raise
    finally:
        for cluster in clusters.values():
            await asyncio.to_thread(cluster.stop)
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--cases", type=lambda v: set(v.split(",")), default=None)
    extra.add_argument("--transports", type=lambda v: v.split(","), default=list(TRANSPORTS))
    extra.add_argument("--failover-rounds", type=int, default=None)
    extra.add_argument("--http-client", choices=HTTP_CLIENTS, default=HTTP_CLIENTS[0])
    known, rest = extra.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(EXTRA_HELP)
    args = common.parse_args(
        "lock_bench", __doc__, rest, duration=5.0, quick="1 s cases, 3 failovers"
    )
    for name, value in vars(known).items():
        setattr(args, name, value)
    if not args.transports or not set(args.transports) <= set(TRANSPORTS):
        print(f"--transports: a comma list of {', '.join(TRANSPORTS)}", file=sys.stderr)
        return 2
    return common.main("lock_bench", args, bench)


if __name__ == "__main__":
    sys.exit(main())
