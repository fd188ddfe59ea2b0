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
from collections.abc import Awaitable
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram
from pydantic import BaseModel
from redis.exceptions import RedisError

from distcluster_worker.membership import Changes, MemberState
from distcluster_worker.queue_role import models as m
from distcluster_worker.queue_role.settings import QueueSettings, load_queue_settings
from distcluster_worker.queue_role.store import StreamStorage, StreamStore
from distcluster_worker.shell.cluster_view import ClusterView
from distcluster_worker.shell.config import Settings
from distcluster_worker.shell.discovery import Diff
from distcluster_worker.shell.errors import ApiError, parse_json
from distcluster_worker.shell.heartbeats import Heartbeat, Heartbeats, loop_ms
from distcluster_worker.shell.jsonio import json_response
from distcluster_worker.shell.node import BaseNode
from distcluster_worker.shell.openapi import Operation
from distcluster_worker.shell.rpc import RpcError

T = TypeVar("T")
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
        if self._store is not None:
            await self._store.close()

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
        body = await parse_json(request, m.PublishRequest)
        bodies = body.bodies()
        _check_max("messages", len(bodies), self.q.max_batch)
        owner = self.view.owner(body.topic)
        forwarded = await self._forward(request, owner, body, self.settings.rpc_timeout_ms)
        if forwarded is not None:
            return forwarded
        loop = asyncio.get_running_loop()
        started = loop.time()
        ids, duplicate = await _redis(self.store.publish(body.topic, bodies, body.idempotency_key))
        self.m_publish_s.observe(loop.time() - started)
        if not duplicate:
            self.m_published.inc(len(ids))
        return json_response({"ids": ids, "owner": owner, "duplicate": duplicate})

    async def _consume(self, request: web.Request) -> web.Response:
        body = await parse_json(request, m.ConsumeRequest)
        _check_max("max", body.max, self.q.max_batch)
        _check_max("block_ms", body.block_ms, self.q.max_block_ms)
        visibility_ms = body.visibility_ms or self.q.visibility_ms
        _check_max("visibility_ms", visibility_ms, self.q.max_visibility_ms)
        owner = self.view.owner(body.topic)
        timeout_ms = self.settings.rpc_timeout_ms + body.block_ms
        forwarded = await self._forward(request, owner, body, timeout_ms)
        if forwarded is not None:
            return forwarded
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
        return json_response({"messages": messages, "owner": owner})

    async def _ack(self, request: web.Request) -> web.Response:
        body, owner, forwarded = await self._ids_request(request)
        if forwarded is not None:
            return forwarded
        acked, not_found = await _redis(self.store.ack(body.topic, body.group, body.ids))
        self.m_acked.inc(acked)
        await self._maybe_trim(body.topic)
        return json_response({"acked": acked, "not_found": not_found, "owner": owner})

    async def _nack(self, request: web.Request) -> web.Response:
        body, owner, forwarded = await self._ids_request(request)
        if forwarded is not None:
            return forwarded
        nacked, not_found = await _redis(self.store.nack(body.topic, body.group, body.ids))
        return json_response({"nacked": nacked, "not_found": not_found, "owner": owner})

    async def _ids_request(
        self, request: web.Request
    ) -> tuple[m.AckRequest, str, web.Response | None]:
        """Parse an ack/nack body; the owner's answer when it had to be forwarded."""
        body = await parse_json(request, m.AckRequest)
        _check_max("ids", len(body.ids), self.q.max_batch)
        owner = self.view.owner(body.topic)
        forwarded = await self._forward(request, owner, body, self.settings.rpc_timeout_ms)
        return body, owner, forwarded

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
        self, request: web.Request, owner: str, body: BaseModel, timeout_ms: int
    ) -> web.Response | None:
        """The owner's answer, or None when this node must serve the request itself.

        The body is serialised again only when it is sent: most requests (and all at the
        owner) are served here, and a batch is costly to dump for nothing.
        """
        url = self.peer_urls.get(owner)
        if owner == self.settings.node_id or url is None or request.query.get("hops"):
            return None
        if self.view.membership.state(owner) is MemberState.SUSPECT:
            # A suspect just failed to answer: do not make every client wait for it again.
            self.m_forwarded.labels("skipped_suspect").inc()
            return None
        path = f"{request.path}?hops=1"
        payload = body.model_dump(exclude_none=True)
        try:
            status, reply = await self.rpc.post_json(
                url, path, payload, timeout_ms=timeout_ms, retries=0
            )
        except RpcError as exc:
            reply, status = None, 0
            self.log.warning("owner unreachable", extra={"owner": owner, "error": str(exc)})
        if reply is None:
            self.m_forwarded.labels("unreachable").inc()
            self._log_changes(self.view.unreachable(owner, self._mono_ms()))
            return None
        self.m_forwarded.labels("ok").inc()
        return json_response(reply, status=status)

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
