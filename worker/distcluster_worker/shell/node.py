"""BaseNode: the life cycle and common endpoints every role builds on.

A role subclasses ``BaseNode`` and fills in hooks: ``routes`` and ``operations`` (its
endpoints and their documentation), ``on_start``/``on_stop`` (its tasks), ``readiness``
and ``role_state``. The shell owns everything else, the same way for every role:

* start-up order: Redis pool and RPC client, then ``on_start`` (which may load state from
  Redis and start timers), then the HTTP site, so that no request arrives before the role
  can answer it;
* shutdown order: ``on_leaving`` (the role stops taking on what it could not finish
  coherently), leave the discovery registry, stop accepting connections and drain
  in-flight requests for at most ``shutdown_grace_ms``, then ``on_stop``, then close the
  RPC client and Redis, so that a handler never sees its clients closed under it;
* ``/health`` (liveness), ``/ready`` (503 until the role says it can serve, and during
  shutdown), ``/metrics``, ``/cluster`` and ``/openapi.json``;
* one middleware (``middleware.node_middleware``) answers every failure of a handler in
  the JSON error shape, so that no request can crash the node, and counts, times and
  logs (at DEBUG) every request with its final status.

Time: roles read the wall clock only through ``now_ms()``, backed by an injected ``clock``
(epoch seconds), so tests can drive it; durations inside the shell use the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any, ClassVar

import redis.asyncio as aioredis
from aiohttp import web
from pydantic import BaseModel

from distcluster_worker import __version__
from distcluster_worker.shell.config import Settings
from distcluster_worker.shell.discovery import Diff, Discovery, Entry, Registry
from distcluster_worker.shell.errors import MAX_BODY_KEY, error_response
from distcluster_worker.shell.fast_front import FastFront, FastRoutes, FrontConnections
from distcluster_worker.shell.logs import NodeLogger, get_logger
from distcluster_worker.shell.metrics import NodeMetrics, metrics_response
from distcluster_worker.shell.middleware import node_middleware
from distcluster_worker.shell.openapi import Operation, build_openapi
from distcluster_worker.shell.rpc import RpcClient

REDIS_SOCKET_TIMEOUT_S = 2.0
REDIS_HEALTH_CHECK_INTERVAL_S = 15


class HealthResponse(BaseModel):
    status: str
    node_id: str
    role: str
    pid: int
    uptime_s: float


class ReadyResponse(BaseModel):
    ready: bool


class ClusterResponse(BaseModel):
    node_id: str
    role: str
    peers: dict[str, str]
    state: dict[str, Any]


COMMON_OPERATIONS = [
    Operation("GET", "/health", "Liveness of this node", None, HealthResponse, {200: "alive"}),
    Operation(
        "GET",
        "/ready",
        "Whether this node can serve requests",
        None,
        ReadyResponse,
        {200: "ready", 503: "not ready (code not_ready)"},
    ),
    Operation("GET", "/metrics", "Prometheus metrics (text format)", None, None, {200: "OK"}),
    Operation("GET", "/cluster", "Node id, role, peers and role state", None, ClusterResponse),
    Operation("GET", "/openapi.json", "This document", None, None, {200: "OpenAPI 3.1"}),
]


class BaseNode:
    """One node of a DistCluster cluster; subclass per role."""

    role: ClassVar[str] = "base"

    def __init__(self, settings: Settings, *, clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self._clock: Callable[[], float] = clock if clock is not None else time.time
        self.log = NodeLogger(get_logger(f"distcluster.{self.role}"), settings.node_id)
        self.metrics = NodeMetrics()
        self.metrics.node_info.labels(settings.node_id, self.role).set(1)
        self.started_at: float = self._clock()
        self.app: web.Application | None = None
        self._rpc: RpcClient | None = None
        self._redis: aioredis.Redis | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._front_sweeper: asyncio.Task[None] | None = None
        self._front = FrontConnections()
        self._stopping = False
        self._role_started = False
        self._stop_requested: asyncio.Event | None = None
        # Every other node this one can reach, ``id -> URL``: PEERS, parsed once, plus
        # what discovery learns at run time. One dict, updated in place, so the role's
        # heartbeats, links and forwarding all see a new peer at once.
        self.peer_urls: dict[str, str] = settings.peer_urls
        self.discovery: Discovery | None = None
        self._discovery_task: asyncio.Task[None] | None = None

    # --- time -------------------------------------------------------------------------

    def now_ms(self) -> int:
        """Wall-clock time in epoch milliseconds, from the injected clock."""
        return int(self._clock() * 1000)

    # --- clients, available after start() (or injected before it by tests) -------------

    @property
    def rpc(self) -> RpcClient:
        if self._rpc is None:
            raise RuntimeError("the RPC client exists only after BaseNode.start()")
        return self._rpc

    @rpc.setter
    def rpc(self, client: RpcClient) -> None:
        self._rpc = client

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the Redis pool exists only after BaseNode.start()")
        return self._redis

    @redis.setter
    def redis(self, client: aioredis.Redis) -> None:
        self._redis = client

    # --- role hooks -------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """The role's endpoints."""
        return []

    def operations(self) -> list[Operation]:
        """The role's endpoints as documented in ``/openapi.json``."""
        return []

    async def on_start(self) -> None:
        """Called after Redis and RPC exist, before the HTTP site accepts connections."""

    async def on_stop(self) -> None:
        """Called during graceful shutdown, after in-flight requests drained."""

    def on_leaving(self) -> None:
        """Called once when a graceful stop begins, before the node leaves the registry and
        drains: from here on peers may hand this node's share to others at any moment, so
        the role must not take on anything it could not finish before they do (a cache
        home grants and renews nothing more). Requests still arrive until the drain."""

    def readiness(self) -> tuple[bool, str]:
        """Whether the role can serve client requests, and why not."""
        return True, "ok"

    def learn_peer(self, node_id: str, url: str) -> None:
        """A peer introduced itself (discovery on): add it as if the registry named it."""
        if self.discovery is not None:
            self.discovery.learn(node_id, url)

    def on_peers_changed(self, change: Diff) -> None:
        """Discovery added or dropped peers (``peer_urls`` is already updated)."""

    def role_state(self) -> dict[str, Any]:
        """The role's view of the cluster, shown by ``GET /cluster``."""
        return {}

    # --- HTTP -------------------------------------------------------------------------

    def build_app(self) -> web.Application:
        """The aiohttp application: middlewares, common endpoints and role routes."""
        app = web.Application(
            middlewares=[node_middleware(self.metrics)],
            client_max_size=self.settings.max_body_bytes,
        )
        app[MAX_BODY_KEY] = self.settings.max_body_bytes
        app.add_routes(
            [
                web.get("/health", self._health),
                web.get("/ready", self._ready),
                web.get("/metrics", self._metrics),
                web.get("/cluster", self._cluster),
                web.get("/openapi.json", self._openapi),
            ]
        )
        app.add_routes(self.routes())
        self.app = app
        return app

    def openapi(self) -> dict[str, Any]:
        title = f"DistCluster {self.role} node"
        return build_openapi(title, __version__, [*COMMON_OPERATIONS, *self.operations()])

    async def _health(self, request: web.Request) -> web.Response:
        uptime_s = max(0.0, (self.now_ms() - self.started_at * 1000) / 1000)
        body = HealthResponse(
            status="ok",
            node_id=self.settings.node_id,
            role=self.role,
            pid=os.getpid(),
            uptime_s=round(uptime_s, 3),
        )
        return web.json_response(body.model_dump())

    async def _ready(self, request: web.Request) -> web.Response:
        if self._stopping:
            return error_response(503, "not_ready", "the node is shutting down")
        ready, reason = self.readiness()
        if not ready:
            return error_response(503, "not_ready", reason)
        return web.json_response({"ready": True})

    async def _metrics(self, request: web.Request) -> web.Response:
        return metrics_response(self.metrics)

    async def _cluster(self, request: web.Request) -> web.Response:
        body = {
            "node_id": self.settings.node_id,
            "role": self.role,
            "peers": self.peer_urls,
            "state": self.role_state(),
        }
        return web.json_response(body, dumps=_dumps)

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self.openapi())

    # --- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open Redis and RPC, run ``on_start``, then listen on ``host:port``."""
        self._stopping = False
        self.started_at = self._clock()
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(
                self.settings.redis_url,
                socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
                health_check_interval=REDIS_HEALTH_CHECK_INTERVAL_S,
            )
        if self._rpc is None:
            self._rpc = RpcClient(self.settings.rpc_timeout_ms, self.settings.rpc_retries)
        await self._rpc.start()
        await self._start_discovery()
        await self.on_start()
        self._role_started = True
        runner = web.AppRunner(
            self.build_app(),
            access_log=None,
            shutdown_timeout=self.settings.shutdown_grace_ms / 1000,
        )
        await runner.setup()
        self._runner = runner
        await self._listen(runner)
        self.log.info(
            "node started",
            extra={"role": self.role, "host": self.settings.host, "port": self.settings.port},
        )

    def fast_routes(self) -> FastRoutes | None:
        """Routes the node answers below aiohttp (see `fast_front`); None: aiohttp only."""
        return None

    async def _listen(self, runner: web.AppRunner) -> None:
        s = self.settings
        fast = self.fast_routes()
        server = runner.server
        if fast is None or server is None:
            await web.TCPSite(runner, s.host, s.port).start()
            return
        hot, serve = fast
        front = self._front
        observe = self.metrics.observe_request

        def connection() -> FastFront:
            return FastFront(
                hot, serve, server, max_body_bytes=s.max_body_bytes, observe=observe, tracker=front
            )

        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(connection, s.host, s.port, backlog=128)
        self._front_sweeper = asyncio.create_task(front.sweep(), name="fast-front-idle")

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests, ``on_stop``, close clients. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self.log.info("node stopping", extra={"grace_ms": self.settings.shutdown_grace_ms})
        try:
            if self._role_started:
                self.on_leaving()
            await self._stop_discovery()
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            if self._front_sweeper is not None:
                self._front_sweeper.cancel()
                self._front_sweeper = None
            if self._runner is not None:
                grace_s = self.settings.shutdown_grace_ms / 1000
                await asyncio.gather(self._front.drain(grace_s), self._runner.cleanup())
                self._runner = None
            if self._role_started:
                self._role_started = False
                await self.on_stop()
        finally:
            await self._close_clients()
        self.log.info("node stopped")

    async def _start_discovery(self) -> None:
        """Announce this node (one round now: peers can find it before it beats them)."""
        s = self.settings
        if s.discovery != "redis":
            return
        me = Entry(s.node_id, self.role, s.advertised_url, self.now_ms())
        registry = Registry(self.redis, s.redis_key("nodes"), me, s.discovery_ttl_ms)
        self.discovery = Discovery(
            registry,
            self_id=s.node_id,
            role=self.role,
            static=s.peer_urls,
            peers=self.peer_urls,
            interval_ms=s.discovery_interval_ms,
            ttl_ms=s.discovery_ttl_ms,
            on_change=self.on_peers_changed,
            log=self.log,
        )
        await self.discovery.round()
        self._discovery_task = asyncio.create_task(self.discovery.run(), name="discovery")

    async def _stop_discovery(self) -> None:
        """Leave the registry first, so that peers stop counting on this node."""
        task, self._discovery_task = self._discovery_task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self.discovery is not None:
            try:
                await self.discovery.withdraw()
            except (OSError, TimeoutError, aioredis.RedisError) as exc:
                self.log.warning("leaving the registry failed", extra={"error": repr(exc)})

    async def _close_clients(self) -> None:
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None
        if self._redis is not None:
            try:
                await self._redis.aclose()
            except (OSError, aioredis.RedisError) as exc:
                self.log.warning("closing Redis failed", extra={"error": str(exc)})
            self._redis = None

    def request_stop(self) -> None:
        """Make ``serve_forever`` return after a graceful stop (as SIGTERM does)."""
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def serve_forever(self) -> None:
        """Start, serve until SIGTERM or SIGINT (or ``request_stop``), then stop gracefully."""
        loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, self._stop_requested.set)
        try:
            await self.start()
            await self._stop_requested.wait()
        finally:
            # Handlers stay until the drain ends: a second SIGTERM must not kill the node
            # half-way through its graceful stop.
            try:
                await self.stop()
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
