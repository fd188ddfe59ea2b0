"""A handle on a real lock_manager cluster for the integration tests.

`LockCluster` wraps a `LocalCluster` whose every directed peer link src->dst goes through
its own `TcpProxy`, a Redis it owns (so tests can restart it), and one aiohttp session
for client calls (clients talk to nodes directly, never through a proxy: a partition cuts
nodes from each other, not the test from the nodes).

Helpers stay small and explicit: `call` returns a `Reply` and never raises on an HTTP
status; `wait_for` polls an async predicate until it holds or the deadline fails the test
with the last thing seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
from tcp_proxy import TcpProxy

from distcluster_worker.runner.cluster import LocalCluster
from distcluster_worker.runner.redis_server import RedisServer

T = TypeVar("T")

# Fast but not twitchy: a 20 ms tick keeps failover well under a second, and 15 ticks of
# election timeout leave room for a loaded CI machine running three Python nodes.
FAST_ENV: dict[str, str] = {
    "RAFT_TICK_MS": "20",
    "RAFT_ELECTION_TICKS": "15",
    "RAFT_HEARTBEAT_TICKS": "1",
    "REQUEST_TIMEOUT_MS": "2000",
    "RPC_TIMEOUT_MS": "500",
    "LOG_LEVEL": "INFO",
}
REQUEST_TIMEOUT_S = int(FAST_ENV["REQUEST_TIMEOUT_MS"]) / 1000
# How far past REQUEST_TIMEOUT_MS a node may answer and still count as "within the bound".
BOUND_SLACK_S = 1.5
# Contiguous node ports are taken below Linux's ephemeral range, where proxies and
# clients get their ports, so the two never collide.
_PORT_LOW, _PORT_HIGH = 15000, 30000


class ClusterFactory(Protocol):
    """The `lock_cluster` fixture: `await lock_cluster(nodes=3, extra_env={...})`."""

    def __call__(
        self,
        nodes: int = 3,
        extra_env: Mapping[str, str] | None = None,
        joiners: Sequence[str] = (),
    ) -> Awaitable[LockCluster]: ...


class HarnessError(AssertionError):
    """A condition the harness waited for never held."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # parsed JSON when the body was JSON, else the text

    @property
    def code(self) -> str | None:
        """The `error.code` of an error reply, else None."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            code = self.body["error"].get("code")
            return code if isinstance(code, str) else None
        return None

    def field(self, name: str) -> Any:
        if not isinstance(self.body, dict):
            raise HarnessError(f"reply {self.status} has no JSON object body: {self.body!r}")
        return self.body.get(name)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int, rng: random.Random | None = None) -> int:
    """First port of `count` consecutive free ports (LocalCluster numbers nodes upwards)."""
    rng = rng or random.Random()
    for _ in range(200):
        base = rng.randrange(_PORT_LOW, _PORT_HIGH - count)
        if all(port_is_free(base + i) for i in range(count)):
            return base
    raise HarnessError(f"no block of {count} free ports in [{_PORT_LOW}, {_PORT_HIGH})")


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    timeout_s: float,
    what: str,
    interval_s: float = 0.05,
) -> T:
    """Poll `probe` until `accept(result)`; fail with the last result after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        last = await probe()
        if accept(last):
            return last
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval_s)


def node_ids(count: int) -> list[str]:
    return [f"node{i}" for i in range(1, count + 1)]


class ProxyMesh:
    """One proxy per directed link src->dst, targeting dst's port."""

    def __init__(self, ports: Mapping[str, int]) -> None:
        self.links: dict[tuple[str, str], TcpProxy] = {}
        for src in ports:
            for dst, port in ports.items():
                if src != dst:
                    self.links[(src, dst)] = TcpProxy("127.0.0.1", port).start()

    def address(self, src: str, dst: str) -> str:
        return self.links[(src, dst)].address

    def cut(self, src: str, dst: str, blackhole: bool = True) -> None:
        self.links[(src, dst)].cut(blackhole=blackhole)

    def isolate(self, node: str, blackhole: bool = True) -> None:
        """Cut every link into and out of `node`."""
        for src, dst in self.links:
            if node in (src, dst):
                self.cut(src, dst, blackhole)

    def partition(self, groups: Iterable[Iterable[str]], blackhole: bool = True) -> None:
        """Cut both directions of every link between nodes of different groups."""
        group_of = {node: i for i, group in enumerate(groups) for node in group}
        for src, dst in self.links:
            if group_of.get(src) != group_of.get(dst):
                self.cut(src, dst, blackhole)

    def heal_all(self) -> None:
        for proxy in self.links.values():
            proxy.heal()
            proxy.delay(0)

    def close(self) -> None:
        for proxy in self.links.values():
            proxy.stop()


class LockCluster:
    """A running lock_manager cluster plus the controls the tests break it with."""

    def __init__(
        self,
        cluster: LocalCluster,
        mesh: ProxyMesh,
        redis: RedisServer,
        session: aiohttp.ClientSession,
        log_dir: Path,
    ) -> None:
        self.cluster = cluster
        self.mesh = mesh
        self.redis = redis
        self.session = session
        self.log_dir = log_dir
        self.down: set[str] = set()  # killed, not yet restarted
        self.paused: set[str] = set()

    @property
    def ids(self) -> list[str]:
        return list(self.cluster.urls)

    @property
    def live_ids(self) -> list[str]:
        return [n for n in self.ids if n not in self.down and n not in self.paused]

    # -- HTTP ------------------------------------------------------------------------

    async def call(
        self,
        node: str,
        method: str,
        path: str,
        payload: Any = None,
        data: bytes | str | None = None,
        timeout_s: float = 15.0,
    ) -> Reply:
        """One request straight to `node`; HTTP errors come back as a Reply."""
        url = self.cluster.urls[node] + path
        return await http_request(self.session, method, url, payload, data, timeout_s)

    async def acquire(
        self,
        node: str,
        resource: str,
        owner: str,
        mode: str = "exclusive",
        ttl_ms: int = 30000,
        wait_ms: int = 0,
        request_id: str | None = None,
        timeout_s: float = 15.0,
    ) -> Reply:
        body: dict[str, Any] = {
            "resource": resource,
            "owner": owner,
            "mode": mode,
            "ttl_ms": ttl_ms,
            "wait_ms": wait_ms,
        }
        if request_id is not None:
            body["request_id"] = request_id
        return await self.call(node, "POST", "/lock/acquire", body, timeout_s=timeout_s)

    async def release(self, node: str, resource: str, owner: str, token: int) -> Reply:
        body = {"resource": resource, "owner": owner, "token": token}
        return await self.call(node, "POST", "/lock/release", body)

    async def renew(self, node: str, resource: str, owner: str, token: int, ttl_ms: int) -> Reply:
        body = {"resource": resource, "owner": owner, "token": token, "ttl_ms": ttl_ms}
        return await self.call(node, "POST", "/lock/renew", body)

    async def get_lock(self, node: str, resource: str) -> Reply:
        return await self.call(node, "GET", f"/lock/{resource}")

    async def status(self, node: str, timeout_s: float = 1.0) -> dict[str, Any] | None:
        """`/raft/status` of `node`, or None when it does not answer in time."""
        try:
            reply = await self.call(node, "GET", "/raft/status", timeout_s=timeout_s)
        except (TimeoutError, aiohttp.ClientError):
            return None
        return reply.body if reply.status == 200 and isinstance(reply.body, dict) else None

    async def metric(self, node: str, name: str, **labels: str) -> float | None:
        """One sample of `node`'s `/metrics` (the sum over any labels not given), or None."""
        reply = await self.call(node, "GET", "/metrics", timeout_s=5.0)
        return metric_value(str(reply.body), name, labels)

    async def statuses(self, nodes: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """Status of every answering node among `nodes` (default: the live ones)."""
        chosen = list(self.live_ids if nodes is None else nodes)
        found = await asyncio.gather(*(self.status(n) for n in chosen))
        return {n: s for n, s in zip(chosen, found, strict=True) if s is not None}

    # -- cluster-wide conditions -----------------------------------------------------

    async def stable_leader(
        self, nodes: Iterable[str] | None = None, timeout_s: float = 15.0
    ) -> tuple[str, int]:
        """Wait until every node in `nodes` answers, exactly one is leader, and all agree
        on its id and term; return (leader_id, term)."""
        chosen = list(self.live_ids if nodes is None else nodes)
        found = await wait_for(
            lambda: self.statuses(chosen),
            lambda s: _agreed_leader(s, chosen) is not None,
            timeout_s,
            f"one agreed leader among {chosen}",
        )
        agreed = _agreed_leader(found, chosen)
        if agreed is None:  # unreachable: wait_for only returns accepted values
            raise HarnessError("no agreed leader")
        return agreed

    async def wait_converged(
        self, nodes: Iterable[str] | None = None, timeout_s: float = 15.0
    ) -> dict[str, dict[str, Any]]:
        """Wait until `nodes` agree on a leader and have all applied the same index."""
        chosen = list(self.live_ids if nodes is None else nodes)

        def same_applied(s: dict[str, dict[str, Any]]) -> bool:
            applied = {st.get("last_applied") for st in s.values()}
            commits = {st.get("commit_index") for st in s.values()}
            return (
                _agreed_leader(s, chosen) is not None and len(applied) == 1 and applied == commits
            )

        return await wait_for(
            lambda: self.statuses(chosen), same_applied, timeout_s, f"{chosen} to converge"
        )

    async def wait_ready(self, node: str, timeout_s: float = 15.0) -> None:
        async def ready() -> int:
            try:
                return (await self.call(node, "GET", "/ready", timeout_s=1.0)).status
            except (TimeoutError, aiohttp.ClientError):
                return 0

        await wait_for(ready, lambda s: s == 200, timeout_s, f"{node} /ready 200")

    # -- faults ----------------------------------------------------------------------

    def kill(self, node: str) -> None:
        self.cluster.nodes[node].kill()
        self.down.add(node)

    def pause(self, node: str) -> None:
        self.cluster.nodes[node].pause()
        self.paused.add(node)

    def resume(self, node: str) -> None:
        self.cluster.nodes[node].resume()
        self.paused.discard(node)

    async def start_node(self, node: str) -> None:
        """Start a node built but not started (a joiner of `build_cluster`)."""
        await asyncio.to_thread(_start_nodes, self.cluster, [node])
        self.down.discard(node)

    async def restart(self, node: str) -> None:
        await asyncio.to_thread(self.cluster.restart_node, node)
        self.down.discard(node)
        self.paused.discard(node)

    def log_tails(self, lines: int = 60) -> str:
        return log_tails(self.log_dir, lines)

    async def close(self) -> None:
        for node in list(self.paused):
            with contextlib.suppress(Exception):  # teardown must go on
                self.resume(node)
        await self.session.close()
        await asyncio.to_thread(self.cluster.stop)
        self.mesh.close()
        await asyncio.to_thread(self.redis.stop)


def log_tails(log_dir: Path, lines: int = 60) -> str:
    """The end of every log file under `log_dir`, for a failing test's report."""
    parts: list[str] = []
    for path in sorted(log_dir.glob("**/*")):
        if path.is_file():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {path.name} (last {len(text)} lines) -----")
            parts.extend(text)
    return "\n".join(parts)


def rejoins_logged(log_dir: Path) -> dict[str, dict[str, int]]:
    """Per node log (queue and cache roles): the members that joined its ring more than
    once, with how many times (a node that left and was taken back)."""
    found: dict[str, dict[str, int]] = {}
    for path in sorted(log_dir.glob("node*.log")):
        joins: dict[str, int] = {}
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("msg") == "membership changed":
                    for member in record.get("joined", []):
                        joins[member] = joins.get(member, 0) + 1
        again = {member: n for member, n in joins.items() if n > 1}
        if again:
            found[path.stem] = again
    return found


def _agreed_leader(
    found: Mapping[str, Mapping[str, Any]], chosen: list[str]
) -> tuple[str, int] | None:
    if set(found) != set(chosen):
        return None
    leaders = [n for n, s in found.items() if s.get("state") == "leader"]
    if len(leaders) != 1:
        return None
    term = found[leaders[0]].get("term")
    agree = all(s.get("leader_id") == leaders[0] and s.get("term") == term for s in found.values())
    return (leaders[0], int(term)) if agree and isinstance(term, int) else None


def metric_value(text: str, name: str, labels: Mapping[str, str]) -> float | None:
    """The sum of the samples of `name` whose labels include `labels`; None if none."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    found: list[float] = []
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        if metric_name == name and all(w in label_text for w in wanted):
            found.append(float(value))
    return sum(found) if found else None


async def http_request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    payload: Any = None,
    data: bytes | str | None = None,
    timeout_s: float = 15.0,
) -> Reply:
    """One request of a test harness (lock, queue, cache): `payload` is sent as JSON, `data`
    as a raw body labelled JSON (for malformed-input tests); HTTP errors come back as a
    Reply, never as an exception."""
    kwargs: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=timeout_s)}
    if payload is not None:
        kwargs["json"] = payload
    elif data is not None:
        kwargs["data"] = data
        kwargs["headers"] = {"Content-Type": "application/json"}
    async with session.request(method, url, **kwargs) as resp:
        return Reply(resp.status, _parse(await resp.text()))


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_cluster(
    nodes: int,
    workdir: Path,
    extra_env: Mapping[str, str] | None = None,
    joiners: Iterable[str] = (),
) -> tuple[LocalCluster, ProxyMesh, RedisServer]:
    """Start Redis, the proxy mesh and the nodes (blocking; call it from a thread).

    `joiners` are built with `RAFT_JOIN=true` and not started: every node's PEERS lists
    them, `RAFT_INITIAL_VOTERS` leaves them out (start them with `LockCluster.start_node`).
    """
    base_port = free_port_block(nodes)
    ids = node_ids(nodes)
    mesh = ProxyMesh({node: base_port + i for i, node in enumerate(ids)})
    redis = RedisServer(data_dir=workdir / "redis", appendonly=True, appendfsync="everysec")
    redis.start()
    env = {**FAST_ENV, **(extra_env or {})}
    cluster = LocalCluster(
        role="lock_manager",
        nodes=nodes,
        base_port=base_port,
        redis_url=redis.url,
        workdir=workdir,
        extra_env=env,
        peer_address=mesh.address,
        log_dir=workdir / "logs",
    )
    waiting = set(joiners)
    if waiting:
        voters = ",".join(n for n in ids if n not in waiting)
        for node_id, proc in cluster.nodes.items():
            proc.env["RAFT_INITIAL_VOTERS"] = voters
            if node_id in waiting:
                proc.env["RAFT_JOIN"] = "true"
    try:
        _check_ports(cluster, base_port)
        if waiting:
            _start_nodes(cluster, [n for n in ids if n not in waiting])
        else:
            cluster.start(wait_ready_s=30)
    except BaseException:
        cluster.stop()
        mesh.close()
        redis.stop()
        raise
    return cluster, mesh, redis


def _start_nodes(cluster: LocalCluster, node_ids: list[str], wait_s: float = 30) -> None:
    for node_id in node_ids:
        cluster.nodes[node_id].start()
    deadline = time.monotonic() + wait_s
    for node_id in node_ids:
        proc = cluster.nodes[node_id]
        proc.wait_healthy(cluster.urls[node_id], max(0.1, deadline - time.monotonic()))


def _check_ports(cluster: LocalCluster, base_port: int) -> None:
    """The mesh targets base_port + i; fail loudly if LocalCluster numbers differently."""
    for i, node in enumerate(node_ids(len(cluster.urls))):
        expected = f"http://127.0.0.1:{base_port + i}"
        if cluster.urls.get(node) != expected:
            raise HarnessError(f"{node} is at {cluster.urls.get(node)}, mesh expects {expected}")
