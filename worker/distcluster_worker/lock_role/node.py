"""The `lock_manager` node: Raft over the network and Redis, serving the lock API.

Every node accepts every request. The leader proposes it and answers when the outcome
is applied; any other node forwards it to the leader it knows (one hop, marked with
`?hops=`), and when no leader is known within `REQUEST_TIMEOUT_MS` it answers 503
`unavailable`. A request id is fixed on the first node, so a forwarded or retried
request is applied at most once. Lock commands (acquire, release, renew) travel to the
leader on the node's peer-calls socket (`shell.peer_calls`: one WebSocket per peer, a
binary frame per call, a tenth of the CPU of an HTTP request); views and membership
changes as HTTP requests.

Raft messages travel as `RAFT_TRANSPORT` says (`lock_role.settings`): by default on one
WebSocket per directed peer link (`lock_role.transport`), else as HTTP POSTs. The node
serves `/raft-stream`, `/raft-vote` and `/raft-append` whichever it sends with.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import random
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from aiohttp import web
from prometheus_client import Gauge
from pydantic import BaseModel

from distcluster_worker.lock_role.driver import RaftDriver
from distcluster_worker.lock_role.members import (
    CATCH_UP_S,
    MemberChanges,
    check_member_id,
    members_view,
)
from distcluster_worker.lock_role.models import (
    NAME_PATTERN,
    AcquireRequest,
    GrantResponse,
    LockView,
    RaftStatus,
    ReleaseRequest,
    ReleaseResponse,
    RenewRequest,
    RenewResponse,
)
from distcluster_worker.lock_role.responses import outcome_answer
from distcluster_worker.lock_role.service import LockService, QuorumUnavailableError
from distcluster_worker.lock_role.settings import LockRoleSettings, load_lock_settings
from distcluster_worker.lock_role.storage import RedisRaftStorage
from distcluster_worker.lock_role.stream import MAX_FRAME_BYTES, STREAM_PATH
from distcluster_worker.lock_role.transport import StreamCollector, StreamTransport
from distcluster_worker.locks.outcomes import Outcome
from distcluster_worker.raft.messages import Message, WireError, message_from_wire, message_to_wire
from distcluster_worker.raft.node import NotLeader, RaftConfig, RaftNode
from distcluster_worker.shell import jsonio
from distcluster_worker.shell.config import Settings
from distcluster_worker.shell.discovery import Diff
from distcluster_worker.shell.errors import (
    ApiError,
    error_response,
    parse_body,
    parse_json,
)
from distcluster_worker.shell.fast_front import FastRoutes
from distcluster_worker.shell.jsonio import json_response
from distcluster_worker.shell.metrics import Counts
from distcluster_worker.shell.node import BaseNode
from distcluster_worker.shell.openapi import Operation
from distcluster_worker.shell.peer_calls import PEER_CALLS_PATH, PeerCalls, PeerCallServer
from distcluster_worker.shell.rpc import RpcError

MAX_HOPS = 2
NAME_RE = re.compile(NAME_PATTERN)
GC_THRESHOLDS = (20_000, 10, 10)
"""Collector thresholds once Raft runs (see `tune_gc`); Python's default is (700, 10, 10)."""


@dataclass(frozen=True, slots=True)
class Hop:
    """Where a request came in: its method and path, and how many nodes forwarded it."""

    method: str
    path: str
    hops: int = 0

    @classmethod
    def of(cls, request: web.Request) -> Hop:
        return cls(request.method, request.path, _hops(request.query_string))


class LockNode(BaseNode):
    role = "lock_manager"

    def __init__(
        self, settings: Settings, *, lock_settings: LockRoleSettings | None = None, **kwargs: Any
    ) -> None:
        super().__init__(settings, **kwargs)
        self.lock_settings = lock_settings if lock_settings is not None else load_lock_settings()
        # Built whatever RAFT_TRANSPORT says: every node accepts streams from its peers.
        self.streams = StreamTransport(
            settings.node_id,
            self.peer_urls,
            dead_after_s=settings.rpc_timeout_ms / 1000,
            tick_s=settings.raft_tick_ms / 1000,
            log=self.log,
        )
        self.metrics.registry.register(StreamCollector(self.streams))
        self.service = LockService(
            clock_ms=self.now_ms,
            request_timeout_ms=settings.request_timeout_ms,
            log=self.log,
            on_outcome=self._count_outcome,
        )
        self.driver: RaftDriver | None = None
        self._storage: RedisRaftStorage | None = None
        self._request_prefix = f"{settings.node_id}.{uuid.uuid4().hex[:16]}."
        self._request_seq = itertools.count(1)
        self._boot_task: asyncio.Task[None] | None = None
        registry = self.metrics.registry
        self._outcomes = Counts(
            "distcluster_lock_outcomes", "Lock table outcomes applied", ["type"]
        )
        registry.register(self._outcomes)
        self._raft_gauge = Gauge(
            "distcluster_raft", "Raft state of this node", ["field"], registry=registry
        )
        self._raft_gauge.labels("term").set_function(lambda: self._status_field("term"))
        self._raft_gauge.labels("commit_index").set_function(
            lambda: self._status_field("commit_index")
        )
        self._raft_gauge.labels("last_applied").set_function(
            lambda: self._status_field("last_applied")
        )
        self._raft_gauge.labels("is_leader").set_function(
            lambda: 1.0 if self.driver and self.driver.node.state == "leader" else 0.0
        )
        # Lock commands forwarded to the leader travel on one WebSocket per peer.
        self.calls = PeerCalls(connect_timeout_s=settings.rpc_timeout_ms / 1000)
        self.call_server = PeerCallServer(
            self._dispatch, heartbeat_s=5 * settings.rpc_timeout_ms / 1000, log=self.log
        )
        self._commands: dict[str, tuple[type[BaseModel], CommandServer]] = {
            "/lock/acquire": (AcquireRequest, self._serve_acquire),
            "/lock/release": (ReleaseRequest, self._serve_release),
            "/lock/renew": (RenewRequest, self._serve_renew),
        }

    # -- lifecycle -------------------------------------------------------------------

    async def on_start(self) -> None:
        self._boot_task = asyncio.create_task(self._boot(), name="raft-boot")

    async def on_stop(self) -> None:
        if self._boot_task is not None:
            self._boot_task.cancel()
        if self.driver is not None:
            await self.driver.stop()
        await self.service.stop()
        await self.streams.close()
        await self.calls.close()
        if self._storage is not None:
            await self._storage.close()

    async def _boot(self) -> None:
        """Load this node's Raft state from Redis (retrying while Redis is down), then run."""
        s = self.settings
        storage = self._storage = RedisRaftStorage(self.redis, s.redis_key("raft", s.node_id))
        delay = 0.1
        while True:
            try:
                restored = await storage.load()
                break
            except Exception as exc:  # noqa: BLE001 - Redis may come up after the node
                self.log.warning("cannot load Raft state yet", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if restored.snapshot is not None:
            self.service.restore(restored.snapshot.data)
        voters = self.lock_settings.bootstrap_voters(s.node_id, self.peer_urls)
        empty = restored.snapshot is None and not restored.entries
        config = RaftConfig(
            node_id=s.node_id,
            voters=voters,
            election_timeout_ticks=s.raft_election_ticks,
            heartbeat_ticks=s.raft_heartbeat_ticks,
            join=self.lock_settings.joins(s.node_id, voters, empty=empty),
        )
        node = RaftNode(config, random.Random(), restored)
        self.driver = RaftDriver(
            node,
            storage,
            self._send,
            self.service,
            tick_ms=s.raft_tick_ms,
            snapshot_entries=s.raft_snapshot_entries,
            log=self.log,
            on_tick=self.service.on_tick,
            links=self.streams.link if self.lock_settings.transport == "stream" else None,
            addressable=self.peer_urls,
        )
        self.service.driver = self.driver
        await self.driver.start()
        tune_gc()
        self.log.info(
            "raft started",
            extra={
                "term": node.term,
                "last_index": node.last_index,
                "voters": node.voters,
                "join": config.join,
                "transport": self.lock_settings.transport,
            },
        )

    def on_peers_changed(self, change: Diff) -> None:
        """Discovery learned addresses: link to members that were unreachable so far."""
        if self.driver is not None:
            self.driver.refresh_links()

    async def _send(self, peer: str, path: str, messages: list[Message]) -> list[Message]:
        body = {"messages": [message_to_wire(m) for m in messages]}
        status, reply = await self.rpc.post_json(self.peer_urls[peer], path, body, retries=0)
        if status != 200 or not isinstance(reply, dict):
            raise RpcError(f"{peer}{path} answered {status}")
        return [message_from_wire(raw) for raw in reply.get("messages", [])]

    # -- BaseNode hooks --------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = super().build_app()
        app.on_shutdown.append(self._close_streams)
        return app

    async def _close_streams(self, app: web.Application) -> None:
        await self.streams.close_inbound()
        await self.call_server.close(grace_s=self.settings.shutdown_grace_ms / 1000)

    def readiness(self) -> tuple[bool, str]:
        if self.driver is None:
            return False, "loading Raft state from Redis"
        if not self.driver.storage_healthy:
            return False, "Redis is not accepting Raft writes"
        if self.driver.node.leader_id is None:
            return False, "no leader elected yet"
        return True, "ok"

    def role_state(self) -> dict[str, Any]:
        if self.driver is None:
            return {"raft": None}
        return {"raft": self._raft_status()}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/lock/acquire", self._acquire),
            web.post("/lock/release", self._release),
            web.post("/lock/renew", self._renew),
            web.get("/lock/{resource}", self._view),
            web.get("/raft/status", self._status),
            web.get("/raft/members", self._members),
            web.post("/raft/members", self._add_member),
            web.delete("/raft/members/{id}", self._remove_member),
            web.post("/raft-vote", self._raft_rpc),
            web.post("/raft-append", self._raft_rpc),
            web.get(STREAM_PATH, self._raft_stream),
            web.get(PEER_CALLS_PATH, self.call_server.serve),
        ]

    def operations(self) -> list[Operation]:
        errors = {400: "bad input", 503: "no quorum"}
        return [
            Operation(
                "post",
                "/lock/acquire",
                "Take a shared or exclusive lock, waiting up to wait_ms",
                AcquireRequest,
                GrantResponse,
                {**errors, 409: "deadlock", 423: "locked"},
            ),
            Operation(
                "post",
                "/lock/release",
                "Release a held lock",
                ReleaseRequest,
                ReleaseResponse,
                {**errors, 409: "not_holder"},
            ),
            Operation(
                "post",
                "/lock/renew",
                "Extend a lease",
                RenewRequest,
                RenewResponse,
                {**errors, 409: "not_holder"},
            ),
            Operation("get", "/lock/{resource}", "Holders and waiters", None, LockView, errors),
            Operation("get", "/raft/status", "This node's Raft state", None, RaftStatus, {}),
        ]

    # -- lock endpoints ----------------------------------------------------------------

    async def _acquire(self, request: web.Request) -> web.Response:
        return await self._serve_acquire(await parse_json(request, AcquireRequest), Hop.of(request))

    async def _release(self, request: web.Request) -> web.Response:
        return await self._serve_release(await parse_json(request, ReleaseRequest), Hop.of(request))

    async def _renew(self, request: web.Request) -> web.Response:
        return await self._serve_renew(await parse_json(request, RenewRequest), Hop.of(request))

    async def _serve_acquire(self, body: AcquireRequest, hop: Hop) -> web.Response:
        s = self.settings
        ttl_ms = body.ttl_ms if body.ttl_ms is not None else s.lock_default_ttl_ms
        _check_limit("ttl_ms", ttl_ms, s.lock_max_ttl_ms)
        _check_limit("wait_ms", body.wait_ms, s.lock_max_wait_ms)
        command = self._command("acquire", body, ttl_ms=ttl_ms)
        return await self._execute(hop, command, wait_ms=body.wait_ms)

    async def _serve_release(self, body: ReleaseRequest, hop: Hop) -> web.Response:
        return await self._execute(hop, self._command("release", body))

    async def _serve_renew(self, body: RenewRequest, hop: Hop) -> web.Response:
        ttl_ms = body.ttl_ms if body.ttl_ms is not None else self.settings.lock_default_ttl_ms
        _check_limit("ttl_ms", ttl_ms, self.settings.lock_max_ttl_ms)
        return await self._execute(hop, self._command("renew", body, ttl_ms=ttl_ms))

    async def _dispatch(self, target: str, raw: bytes) -> tuple[int, bytes]:
        """Serve a lock command forwarded on a peer-calls socket (`target`: path?hops=N);
        the call server answers a failure in the JSON error shape."""
        parts = urlsplit(target)
        if parts.path not in self._commands:
            raise ApiError(404, "not_found", f"no forwarded operation {parts.path}")
        return await self._serve_command(parts.path, parts.query, raw)

    def fast_routes(self) -> FastRoutes:
        """The lock commands, answered below aiohttp: two of them make every client cycle."""
        return frozenset(self._commands), self._serve_command

    async def _serve_command(self, path: str, query: str, raw: bytes) -> tuple[int, bytes]:
        """Status and JSON body answering the lock command at `path` (a key of
        `_commands`) with body `raw`; a refused request gets its JSON error."""
        model, serve = self._commands[path]
        try:
            response = await serve(parse_body(raw, model), Hop("POST", path, _hops(query)))
        except ApiError as exc:
            response = exc.response()
        body = response.body
        return response.status, body if isinstance(body, bytes) else b""

    async def _execute(
        self, hop: Hop, command: dict[str, Any], *, wait_ms: int = 0
    ) -> web.Response:
        async def on_leader() -> web.Response:
            outcome = await self.service.execute(command, wait_ms=wait_ms)
            status, body = outcome_answer(outcome)
            return json_response(body, status=status)

        return await self._lead_or_forward(hop, on_leader, command, wait_ms=wait_ms)

    async def _view(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        if NAME_RE.fullmatch(resource) is None:
            raise ApiError(400, "bad_request", f"invalid resource name {json.dumps(resource)}")

        async def on_leader() -> web.Response:
            return json_response(await self.service.read(resource))

        return await self._lead_or_forward(Hop.of(request), on_leader, None)

    async def _lead_or_forward(
        self,
        hop: Hop,
        on_leader: Callable[[], Awaitable[web.Response]],
        command: dict[str, Any] | None,
        *,
        wait_ms: int = 0,
    ) -> web.Response:
        """Serve on this node while it leads; otherwise forward to the leader it knows.

        `command` (None for reads) is what a forwarded request carries, minus its `op`,
        which the leader's route implies.
        """
        deadline: float | None = None  # set on the first miss: the leader never needs it
        while True:
            if self._is_leader():
                try:
                    return await on_leader()
                except NotLeader:
                    if self._is_leader():  # handing leadership over: wait a tick
                        await asyncio.sleep(self.settings.raft_tick_ms / 1000)
                    continue
                except QuorumUnavailableError as exc:
                    return _unavailable(str(exc))
            if deadline is None:
                deadline = self._deadline(wait_ms)
            leader = await self._wait_for_leader(deadline)
            if leader is None:
                return _unavailable("no leader is known; the cluster may have lost its quorum")
            if leader != self.settings.node_id:
                body = None if command is None else {k: v for k, v in command.items() if k != "op"}
                return await self._forward(hop, body, deadline)

    async def _status(self, request: web.Request) -> web.Response:
        if self.driver is None:
            return error_response(503, "not_ready", "Raft state is still loading")
        return json_response(self._raft_status())

    # -- membership --------------------------------------------------------------------

    async def _members(self, request: web.Request) -> web.Response:
        if self.driver is None:
            return error_response(503, "not_ready", "Raft state is still loading")
        return json_response(members_view(self.driver.node))

    def _member_changes(self) -> MemberChanges:
        if self.driver is None:
            raise QuorumUnavailableError("the Raft driver is not running")
        s = self.settings
        return MemberChanges(
            self.driver, commit_timeout_s=s.request_timeout_ms / 1000, tick_s=s.raft_tick_ms / 1000
        )

    async def _add_member(self, request: web.Request) -> web.Response:
        try:
            raw = await request.json(loads=jsonio.loads)
        except ValueError:
            raise ApiError(400, "bad_request", "the body must be JSON") from None
        node_id = check_member_id(raw.get("id") if isinstance(raw, dict) else None, self.peer_urls)

        async def on_leader() -> web.Response:
            return json_response(await self._member_changes().add(node_id))

        wait_ms = int(CATCH_UP_S * 1000) + 2 * self.settings.request_timeout_ms
        return await self._lead_or_forward(
            Hop.of(request), on_leader, {"id": node_id}, wait_ms=wait_ms
        )

    async def _remove_member(self, request: web.Request) -> web.Response:
        node_id = request.match_info["id"]

        async def on_leader() -> web.Response:
            changes = self._member_changes()
            if node_id == self.settings.node_id:
                await self._hand_over(changes)
                raise NotLeader(None)  # forward to the new leader
            return json_response(await changes.remove(node_id))

        wait_ms = 2 * self.settings.request_timeout_ms
        return await self._lead_or_forward(Hop.of(request), on_leader, None, wait_ms=wait_ms)

    async def _hand_over(self, changes: MemberChanges) -> None:
        """Transfer leadership to the most caught-up voter and wait until this node
        stepped down (503 if it did not within the request timeout)."""
        target = changes.transfer_target()
        if target is None or self.driver is None:
            raise ApiError(400, "invalid_conf_change", "no other voter", reason="last_voter")
        await self.driver.transfer_leadership(target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.request_timeout_ms / 1000
        while self._is_leader():
            if loop.time() >= deadline:
                raise QuorumUnavailableError(f"leadership transfer to {target} did not complete")
            await asyncio.sleep(self.settings.raft_tick_ms / 1000)

    async def _raft_rpc(self, request: web.Request) -> web.Response:
        try:
            # Peer to peer, so bounded like a stream frame rather than by MAX_BODY_BYTES:
            # the batch that catches a learner up is larger than any client request.
            peer_request = request.clone(client_max_size=MAX_FRAME_BYTES)
            raw = await peer_request.json(loads=jsonio.loads)
            messages = [message_from_wire(m) for m in raw["messages"]]
        except (ValueError, KeyError, TypeError, WireError) as exc:
            return error_response(400, "bad_request", f"bad Raft message: {exc}")
        if not messages or len({m.src for m in messages}) != 1:
            return error_response(400, "bad_request", "messages must come from one peer")
        if messages[0].src not in self.peer_urls:
            return error_response(403, "forbidden", f"{messages[0].src!r} is not a peer")
        if self.driver is None:
            return error_response(503, "not_ready", "Raft state is still loading")
        replies = await self.driver.receive(messages)
        return json_response({"messages": [message_to_wire(m) for m in replies]})

    async def _raft_stream(self, request: web.Request) -> web.StreamResponse:
        return await self.streams.serve(request, self.driver.receive if self.driver else None)

    # -- helpers -----------------------------------------------------------------------

    def _is_leader(self) -> bool:
        return self.driver is not None and self.driver.node.state == "leader"

    def _deadline(self, wait_ms: int) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + (wait_ms + self.settings.request_timeout_ms) / 1000

    async def _wait_for_leader(self, deadline: float) -> str | None:
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            driver = self.driver
            if driver is not None and driver.node.leader_id is not None:
                leader = driver.node.leader_id
                if leader != self.settings.node_id or driver.node.state == "leader":
                    return leader
            await asyncio.sleep(self.settings.raft_tick_ms / 1000)
        return None

    async def _forward(
        self, hop: Hop, body: dict[str, Any] | None, deadline: float
    ) -> web.Response:
        leader = self.driver.node.leader_id if self.driver else None
        if hop.hops >= MAX_HOPS or leader is None or leader not in self.peer_urls:
            return _unavailable("the leader could not be reached")
        timeout_ms = max(1, int((deadline - asyncio.get_running_loop().time()) * 1000))
        path = f"{hop.path}?hops={hop.hops + 1}"
        url = self.peer_urls[leader]
        try:
            if hop.method == "POST" and hop.path in self._commands and body is not None:
                raw = orjson.dumps(body)
                status, answer = await self.calls.call(url, path, raw, timeout_s=timeout_ms / 1000)
                return web.Response(body=answer, status=status, content_type="application/json")
            if hop.method == "DELETE":
                status, reply = await self.rpc.delete_json(
                    url, path, timeout_ms=timeout_ms, retries=0
                )
            elif body is None:
                status, reply = await self.rpc.get_json(url, path, timeout_ms=timeout_ms, retries=0)
            else:
                status, reply = await self.rpc.post_json(
                    url, path, body, timeout_ms=timeout_ms, retries=0
                )
        except RpcError as exc:
            return _unavailable(f"leader {leader} unreachable: {exc}")
        return json_response(reply, status=status)

    def _raft_status(self) -> dict[str, Any]:
        if self.driver is None:
            return {}
        status = dict(self.driver.node.status())
        status.setdefault("last_applied", self.driver.node.applied_index)
        status["lock_table"] = self.service.table.stats()
        return status

    def _status_field(self, name: str) -> float:
        if self.driver is None:
            return 0.0
        value = self.driver.node.status().get(name, 0)
        return float(value) if isinstance(value, int | float) else 0.0

    def _command(self, op: str, body: BaseModel, **overrides: Any) -> dict[str, Any]:
        """The table command for a validated request; the request id is fixed here, once.

        A generated id is this node's id, a nonce drawn at start and a counter: unique
        across nodes and restarts, and much cheaper than a uuid4 per request.
        """
        # A validated model keeps its fields in __dict__ (iterating it costs more).
        fields = {name: value for name, value in body.__dict__.items() if value is not None}
        if "request_id" not in fields:
            fields["request_id"] = f"{self._request_prefix}{next(self._request_seq)}"
        return {"op": op, **fields, **overrides}

    def _count_outcome(self, outcome: Outcome) -> None:
        self._outcomes.inc(type(outcome).__name__.lower())


def tune_gc() -> None:
    """Make the cyclic garbage collector cost a loaded node less, once it has booted.

    Every request allocates a few dozen tracked objects (futures, dicts, outcomes), so
    with the default threshold of 700 a young collection ran every twenty or so requests, and
    every tenth of them an older one; the full ones walked everything imported at start
    (aiohttp, pydantic, redis: some sixty thousand objects that never die) and paused
    the node for about 20 ms each. `gc.freeze` moves what exists now out of the
    collector's sight, and a larger first threshold makes young collections rarer. Cycles
    are still collected, only less often.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


CommandServer = Callable[[Any, Hop], Awaitable[web.Response]]


def _hops(query: str) -> int:
    """The `hops` count a query string carries (0 when absent or not a count). A client's
    request has no query, and skipping the parse of an empty one is most of this call."""
    if not query:
        return 0
    raw = parse_qs(query).get("hops", [""])[0]
    return int(raw) if raw.isdigit() else 0


def _check_limit(field: str, value: int, limit: int) -> None:
    if value > limit:
        raise ApiError(400, "bad_request", f"{field} must be at most {limit}, got {value}")


def _unavailable(message: str) -> web.Response:
    return error_response(503, "unavailable", message)
