"""The `queue` node: topics spread over live nodes by a consistent-hash ring, stored in
Redis Streams with consumer groups.

Every node accepts every request. A topic's owner (``ring.owner(topic)`` over the live
members) serves its publish, consume, ack and nack; another node forwards the request in
one hop, marked ``?hops=1`` so it is never forwarded again, even when two nodes briefly
disagree about the ring. Ownership is an affinity, not a lock: the data lives in Redis,
so when the owner cannot be reached the receiving node serves the request itself and
reports the owner unreachable to the failure detector. No publish fails because one node
is down. (A forwarded publish whose answer is lost may be applied twice: delivery is
at-least-once; clients that need exactly one entry send an ``idempotency_key``.)

Membership: every ``QUEUE_HEARTBEAT_MS`` each node POSTs ``/ring/heartbeat`` to every
peer; answers and received heartbeats feed the pure ``Membership`` core, failed sends are
reported as unreachable, and a tick loop wakes at the core's next deadline, so a silent
node leaves the ring ``QUEUE_DEAD_AFTER_MS`` after it was last heard and rejoins on its
first heartbeat. Membership times come from the event loop's monotonic clock.

Errors: bad input is 400/413 from ``parse_json`` and the checks below; a Redis failure is
503 ``unavailable`` (the node keeps serving and recovers when Redis does).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram
from redis.exceptions import RedisError

from distcluster_worker.membership import Changes, MemberState
from distcluster_worker.queue_role import models as m
from distcluster_worker.queue_role.settings import QueueSettings, load_queue_settings
from distcluster_worker.queue_role.store import StreamStorage, StreamStore
from distcluster_worker.shell.cluster_view import ClusterView
from distcluster_worker.shell.config import Settings
from distcluster_worker.shell.discovery import Diff
from distcluster_worker.shell.errors import (
    ApiError,
    parse_body,
    parse_json,
    read_body,
)
from distcluster_worker.shell.heartbeats import Heartbeat, Heartbeats, loop_ms
from distcluster_worker.shell.jsonio import json_response
from distcluster_worker.shell.node import BaseNode
from distcluster_worker.shell.openapi import Operation
from distcluster_worker.shell.peer_calls import PEER_CALLS_PATH, PeerCalls, PeerCallServer
from distcluster_worker.shell.rpc import RpcError

T = TypeVar("T")
B = TypeVar("B", bound=m.TopicBody)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class QueueNode(BaseNode):
    role = "queue"

    def __init__(
        self,
        settings: Settings,
        *,
        queue_settings: QueueSettings | None = None,
        store: StreamStorage | None = None,
        **kwargs: Any,
    ) -> None:
        """``store`` replaces the Redis ``StreamStore`` (tests pass the in-memory twin)."""
        super().__init__(settings, **kwargs)
        self.q = queue_settings if queue_settings is not None else load_queue_settings()
        self.view = ClusterView.for_peers(settings.node_id, self.peer_urls, self.q)
        self._store: StreamStorage | None = store
        self._tasks: list[asyncio.Task[None]] = []
        self._redis_ok = False
        self._beats: Heartbeats | None = None
        self._last_trim: dict[str, float] = {}
        self._ops = self._operations()
        # Forwarded requests travel on one WebSocket per owner (see shell/peer_calls.py).
        self.calls = PeerCalls(connect_timeout_s=settings.rpc_timeout_ms / 1000)
        self.call_server = PeerCallServer(
            self._dispatch, heartbeat_s=self.q.dead_after_ms / 1000, log=self.log
        )
        self._init_metrics()

    def _init_metrics(self) -> None:
        r = self.metrics.registry
        self.m_published = Counter("distcluster_queue_published", "Messages added", registry=r)
        self.m_delivered = Counter(
            "distcluster_queue_delivered", "Messages handed to consumers", registry=r
        )
        self.m_acked = Counter("distcluster_queue_acked", "Messages acknowledged", registry=r)
        self.m_dead = Counter(
            "distcluster_queue_dead_lettered", "Messages moved to dead letters", registry=r
        )
        self.m_forwarded = Counter(
            "distcluster_queue_forwarded", "Requests forwarded to owners", ["result"], registry=r
        )
        self.m_publish_s = Histogram(
            "distcluster_queue_publish_seconds",
            "Time from a valid publish request to Redis accepting it",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        live = Gauge("distcluster_queue_ring_members", "Members on the ring", registry=r)
        live.set_function(lambda: float(len(self.view.ring)))

    @property
    def store(self) -> StreamStorage:
        if self._store is None:
            raise RuntimeError("the stream store exists only after start()")
        return self._store

    # -- life cycle ------------------------------------------------------------------

    async def on_start(self) -> None:
        if self._store is None:
            self._store = StreamStore(self.redis, self.settings.redis_key("queue"), self.q)
        self._beats = Heartbeats.for_node(
            self,
            self.view,
            path="/ring/heartbeat",
            interval_ms=self.q.heartbeat_ms,
            incarnation=self.now_ms(),
            on_changes=self._log_changes,
        )
        self._tasks = [
            asyncio.create_task(self._beats.run(self._check_redis), name="queue-heartbeats"),
            asyncio.create_task(self._tick_loop(), name="queue-membership-ticks"),
        ]

    async def on_stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self.calls.close()
        if self._store is not None:
            await self._store.close()

    def build_app(self) -> web.Application:
        app = super().build_app()
        app.on_shutdown.append(self._close_peer_calls)
        return app

    async def _close_peer_calls(self, app: web.Application) -> None:
        await self.call_server.close(grace_s=self.settings.shutdown_grace_ms / 1000)

    def readiness(self) -> tuple[bool, str]:
        if not self._redis_ok:
            return False, "Redis is not answering"
        return True, "ok"

    def role_state(self) -> dict[str, Any]:
        return {"membership": self.view.membership.snapshot(), "ring": self.view.describe()}

    # -- membership ------------------------------------------------------------------

    def _mono_ms(self) -> int:
        return loop_ms()

    async def _check_redis(self) -> None:
        try:
            ok = await self.store.ping()
        except (RedisError, OSError, TimeoutError):
            ok = False
        if ok != self._redis_ok:
            self.log.info("redis reachability changed", extra={"reachable": ok})
        self._redis_ok = ok

    async def _tick_loop(self) -> None:
        while True:
            now = self._mono_ms()
            self._log_changes(self.view.tick(now))
            deadline = self.view.membership.next_deadline_ms()
            wait_ms = self.q.heartbeat_ms if deadline is None else deadline - now
            await asyncio.sleep(min(max(wait_ms, 5), self.q.heartbeat_ms) / 1000)

    def _log_changes(self, changes: Changes) -> None:
        if changes:
            self.log.info(
                "membership changed",
                extra={
                    "joined": changes.joined,
                    "left": changes.left,
                    "suspected": changes.suspected,
                    "recovered": changes.recovered,
                    "restarted": changes.restarted,
                    "live": self.view.membership.live(),
                },
            )

    def on_peers_changed(self, change: Diff) -> None:
        self._log_changes(self.view.discovered(change, self._mono_ms()))

    async def _heartbeat(self, request: web.Request) -> web.Response:
        body = await parse_json(request, Heartbeat)
        return json_response(self._heartbeats().receive(body))

    def _heartbeats(self) -> Heartbeats:
        if self._beats is None:
            raise ApiError(503, "not_ready", "the node is starting")
        return self._beats

    # -- routes ----------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/queue/publish", self._publish),
            web.post("/queue/consume", self._consume),
            web.post("/queue/ack", self._ack),
            web.post("/queue/nack", self._nack),
            web.get("/queue/{topic}/stats", self._stats),
            web.get("/ring", self._ring),
            web.post("/ring/heartbeat", self._heartbeat),
            web.get(PEER_CALLS_PATH, self.call_server.serve),
        ]

    def operations(self) -> list[Operation]:
        errors = {400: "bad input", 413: "body too large", 503: "Redis unavailable"}
        return [
            Operation(
                "post",
                "/queue/publish",
                "Append messages to a topic",
                m.PublishRequest,
                m.PublishResponse,
                errors,
            ),
            Operation(
                "post",
                "/queue/consume",
                "Receive messages for a consumer of a group",
                m.ConsumeRequest,
                m.ConsumeResponse,
                errors,
            ),
            Operation(
                "post", "/queue/ack", "Acknowledge messages", m.AckRequest, m.AckResponse, errors
            ),
            Operation(
                "post",
                "/queue/nack",
                "Make messages redeliverable now",
                m.AckRequest,
                m.NackResponse,
                errors,
            ),
            Operation("get", "/queue/{topic}/stats", "Topic stats", None, m.TopicStats, errors),
            Operation("get", "/ring", "Ring members, or ?topic= owner", None, m.RingView, {}),
            Operation("post", "/ring/heartbeat", "Node-to-node heartbeat", Heartbeat, None, {}),
        ]

    # -- queue endpoints -------------------------------------------------------------

    async def _publish(self, request: web.Request) -> web.Response:
        return await self._route(request, self._ops["/queue/publish"])

    async def _consume(self, request: web.Request) -> web.Response:
        return await self._route(request, self._ops["/queue/consume"])

    async def _ack(self, request: web.Request) -> web.Response:
        return await self._route(request, self._ops["/queue/ack"])

    async def _nack(self, request: web.Request) -> web.Response:
        return await self._route(request, self._ops["/queue/nack"])

    def _operations(self) -> dict[str, _Op[Any]]:
        """The topic operations: served by the topic's owner, forwarded by the others."""
        rpc_ms = self.settings.rpc_timeout_ms
        ops: list[_Op[Any]] = [
            _Op("/queue/publish", m.PublishRequest, self._serve_publish, lambda b: rpc_ms),
            _Op(
                "/queue/consume",
                m.ConsumeRequest,
                self._serve_consume,
                lambda b: rpc_ms + b.block_ms,
            ),
            _Op("/queue/ack", m.AckRequest, self._serve_ack, lambda b: rpc_ms),
            _Op("/queue/nack", m.AckRequest, self._serve_nack, lambda b: rpc_ms),
        ]
        return {op.path: op for op in ops}

    async def _route(self, request: web.Request, op: _Op[Any]) -> web.Response:
        """Validate; forward to the topic's owner, or serve here (owner, or no answer)."""
        raw = await read_body(request)
        body = parse_body(raw, op.model)
        owner = self.view.owner(body.topic)
        if not request.query.get("hops"):
            forwarded = await self._forward(owner, op.path, raw, op.timeout_ms(body))
            if forwarded is not None:
                status, answer = forwarded
                return web.Response(body=answer, status=status, content_type="application/json")
        return json_response(await op.serve(body, owner))

    async def _dispatch(self, path: str, raw: bytes) -> tuple[int, bytes]:
        """Serve a call forwarded over a peer-calls socket (never forwarded again); the
        call server answers an ApiError or a failure in the JSON error shape."""
        op = self._ops.get(path)
        if op is None:
            raise ApiError(404, "not_found", f"no peer operation {path}")
        body = parse_body(raw, op.model)
        answer = await op.serve(body, self.view.owner(body.topic))
        return 200, orjson.dumps(answer, default=str)

    async def _serve_publish(self, body: m.PublishRequest, owner: str) -> dict[str, Any]:
        bodies = body.bodies()
        _check_max("messages", len(bodies), self.q.max_batch)
        loop = asyncio.get_running_loop()
        started = loop.time()
        ids, duplicate = await _redis(self.store.publish(body.topic, bodies, body.idempotency_key))
        self.m_publish_s.observe(loop.time() - started)
        if not duplicate:
            self.m_published.inc(len(ids))
        return {"ids": ids, "owner": owner, "duplicate": duplicate}

    async def _serve_consume(self, body: m.ConsumeRequest, owner: str) -> dict[str, Any]:
        _check_max("max", body.max, self.q.max_batch)
        _check_max("block_ms", body.block_ms, self.q.max_block_ms)
        visibility_ms = body.visibility_ms or self.q.visibility_ms
        _check_max("visibility_ms", visibility_ms, self.q.max_visibility_ms)
        result = await _redis(
            self.store.consume(
                body.topic, body.group, body.consumer, body.max, visibility_ms, body.block_ms
            )
        )
        self.m_delivered.inc(len(result.messages))
        self.m_dead.inc(result.dead_lettered)
        messages = [
            {"id": d.id, "body": d.body, "deliveries": d.deliveries} for d in result.messages
        ]
        return {"messages": messages, "owner": owner}

    async def _serve_ack(self, body: m.AckRequest, owner: str) -> dict[str, Any]:
        _check_max("ids", len(body.ids), self.q.max_batch)
        acked, not_found = await _redis(self.store.ack(body.topic, body.group, body.ids))
        self.m_acked.inc(acked)
        await self._maybe_trim(body.topic)
        return {"acked": acked, "not_found": not_found, "owner": owner}

    async def _serve_nack(self, body: m.AckRequest, owner: str) -> dict[str, Any]:
        _check_max("ids", len(body.ids), self.q.max_batch)
        nacked, not_found = await _redis(self.store.nack(body.topic, body.group, body.ids))
        return {"nacked": nacked, "not_found": not_found, "owner": owner}

    async def _stats(self, request: web.Request) -> web.Response:
        topic = _path_topic(request.match_info["topic"])
        stats = await _redis(self.store.stats(topic, self.now_ms()))
        return json_response({**stats, "owner": self.view.owner(topic)})

    async def _ring(self, request: web.Request) -> web.Response:
        topic = request.query.get("topic")
        if topic is None:
            return json_response(self.view.describe())
        topic = _path_topic(topic)
        body = {"topic": topic, "owner": self.view.owner(topic), "members": self.view.ring.members}
        return json_response(body)

    # -- helpers ---------------------------------------------------------------------

    async def _forward(
        self, owner: str, path: str, raw: bytes, timeout_ms: int
    ) -> tuple[int, bytes] | None:
        """The owner's (status, body), or None when this node must serve the request.

        The request's bytes go as they came (the owner validates them again) on this
        node's peer-calls socket to the owner, and the answer's bytes come back as they
        are: nothing is encoded or decoded twice on the way.
        """
        url = self.peer_urls.get(owner)
        if owner == self.settings.node_id or url is None:
            return None
        if self.view.membership.state(owner) is MemberState.SUSPECT:
            # A suspect just failed to answer: do not make every client wait for it again.
            self.m_forwarded.labels("skipped_suspect").inc()
            return None
        try:
            answer = await self.calls.call(url, path, raw, timeout_s=timeout_ms / 1000)
        except RpcError as exc:
            self.log.warning("owner unreachable", extra={"owner": owner, "error": str(exc)})
            self.m_forwarded.labels("unreachable").inc()
            self._log_changes(self.view.unreachable(owner, self._mono_ms()))
            return None
        self.m_forwarded.labels("ok").inc()
        return answer

    async def _maybe_trim(self, topic: str) -> None:
        """Apply retention at most every QUEUE_TRIM_INTERVAL_MS per topic (after acks)."""
        now = asyncio.get_running_loop().time()
        if now - self._last_trim.get(topic, -1e18) < self.q.trim_interval_ms / 1000:
            return
        self._last_trim[topic] = now
        try:
            await self.store.trim(topic)
        except (RedisError, OSError, TimeoutError) as exc:
            # The ack succeeded; retention can wait for the next one.
            self.log.warning("trim failed", extra={"topic": topic, "error": str(exc)})


@dataclass(frozen=True, slots=True)
class _Op(Generic[B]):
    """A topic operation: its path, body model, owner-side handler and forward timeout."""

    path: str
    model: type[B]
    serve: Callable[[B, str], Awaitable[dict[str, Any]]]
    timeout_ms: Callable[[B], int]


async def _redis(call: Awaitable[T]) -> T:
    """Await a Redis operation; a Redis failure becomes 503 ``unavailable``."""
    try:
        return await call
    except (RedisError, OSError, TimeoutError) as exc:
        raise ApiError(503, "unavailable", f"Redis is unavailable: {type(exc).__name__}") from None


def _check_max(field: str, value: int, limit: int) -> None:
    if value > limit:
        raise ApiError(400, "bad_request", f"{field} must be at most {limit}, got {value}")


def _path_topic(topic: str) -> str:
    if m.NAME_RE.fullmatch(topic) is None:
        raise ApiError(400, "bad_request", "topic must match [A-Za-z0-9._:-]{1,200}")
    return topic
