"""The `cache` node: node-local caches over Redis, kept coherent by MESI with home nodes.

Every key has a home: the ring (over the live members; heartbeats feed a ``Membership``
core, as in the queue role) names the node that should hold the key's slot, and that node
acts as the key's home only while it holds the slot in Redis (`slots.py`, one round every
quarter slot lease). The home runs the key's ``Directory`` (`home.py`): it orders the
key's transactions one at a time and knows the copies. A request that reaches a node the
ring names but that does not hold the slot gets 503 ``not_home`` with the holder it knows
of; the requester then asks that holder, once.

Client endpoints: ``GET /cache/{key}`` -> ``{key, value, state}`` (404 ``not_found``);
``PUT /cache/{key}`` ``{"value": "<string>"}`` -> ``{key, value, version, state}``, which
answers only once every other copy acked its invalidation or its lease ran out, and the
value is in Redis; ``DELETE /cache/{key}`` -> ``{key, deleted, version}``;
``GET /cache/stats``; ``GET /cache/lines``; ``GET /ring`` (``?key=`` -> ``{key, home,
members}``, the key's home). The keys ``stats`` and ``lines`` are reserved
(a PUT or DELETE of them is 400 ``reserved_key``): their GET would reach the debug routes.

Node-to-node (all POST, JSON): ``/cache/home/read`` ``{key, node}`` and
``/cache/home/write`` ``{key, node, value|null, dropped}`` (to the key's home; the answer carries
``{found, value, version, state, grant}`` / ``{version, state, grant}``);
``/cache/home/renew`` ``{node, keys, grants}`` -> ``{ok: [bool]}`` (a node's renewal batch);
``/cache/home/evicted`` ``{key, node, grant}`` (a copy was evicted);
``/cache/bus_read`` ``{key, txn, downgrade, write_back}`` (home -> supplier; 200
``{value, version}`` or 404); ``/cache/invalidate`` ``{key, txn}`` (home -> holder; 200
``{acked: true}``); ``/cache/heartbeat`` ``{node_id, incarnation}``.

A hit is served from memory only within the copy's serve time. Every ``renew_every_ms`` the
node sends each home one batch with the copies that run out soonest, so copies live as long
as their home answers and are not invalidated or evicted; a node cut off from a home stops
serving that home's copies within one lease. Reads during a home's grace period are served
without granting a copy (state ``I``). Redis down: misses and writes are 503, hits go
on while the homes' slot leases and then the copies last (renewals need no Redis, but a
home renews only copies of slots it holds). A node keeps nothing across restarts.

Ring changes: heartbeat answers are acknowledgements that the home's grace waits for, and
a graceful stop (``on_leaving``) makes the home grant, renew and complete nothing more
before the node leaves the registry (see ``home.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from distcluster_worker.cache_role import models as m
from distcluster_worker.cache_role.home import Home, HomeTimes
from distcluster_worker.cache_role.local import Evicted, LocalCache
from distcluster_worker.cache_role.metrics import CacheMetrics
from distcluster_worker.cache_role.settings import CacheSettings, load_cache_settings
from distcluster_worker.cache_role.slots import SlotLeases, key_slot
from distcluster_worker.cache_role.store import CacheStore
from distcluster_worker.coherence import (
    CopyTable,
    MesiState,
    Renewal,
    SlotTable,
    Ticket,
    slot_name,
    wanted_slots,
)
from distcluster_worker.eviction import Line, LineStore
from distcluster_worker.membership import Changes
from distcluster_worker.shell.cluster_view import ClusterView
from distcluster_worker.shell.config import Settings
from distcluster_worker.shell.discovery import Diff
from distcluster_worker.shell.errors import ApiError, parse_json
from distcluster_worker.shell.heartbeats import Heartbeat, Heartbeats, loop_ms
from distcluster_worker.shell.jsonio import json_response
from distcluster_worker.shell.node import BaseNode
from distcluster_worker.shell.openapi import Operation
from distcluster_worker.shell.rpc import RpcError

# A renewal batch is cut so that its body stays well inside the node's request size bound.
_RENEW_ENTRY_OVERHEAD_BYTES = 48


def grant_of(wire: list[int]) -> tuple[int, int]:
    return (int(wire[0]), int(wire[1]))


class CacheNode(BaseNode):
    role = "cache"

    def __init__(
        self, settings: Settings, *, cache_settings: CacheSettings | None = None, **kwargs: Any
    ) -> None:
        super().__init__(settings, **kwargs)
        self.c = cache_settings if cache_settings is not None else load_cache_settings()
        self.view = ClusterView.for_peers(settings.node_id, self.peer_urls, self.c)
        store = LineStore(self.c.capacity, self.c.policy, max_bytes=self.c.max_bytes)
        copies = CopyTable(self.c.serve_ms, fence_keep_ms=2 * self.c.lease_ms)
        self.local = LocalCache(store, copies)
        self._home: Home | None = None
        self._store: CacheStore | None = None
        self._slots: SlotLeases | None = None
        self._slots_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._beats: Heartbeats | None = None
        names = ("hits", "misses", "evictions", "invalidations_received", "bus_reads_served")
        self.counts: dict[str, int] = dict.fromkeys(names, 0)
        self.counts.update(write_backs=0, renewals_sent=0, renewals_refused=0)
        self.mx = CacheMetrics(self.metrics.registry)

    @property
    def home(self) -> Home:
        if self._home is None:
            raise RuntimeError("the home exists only after start()")
        return self._home

    @property
    def store(self) -> CacheStore:
        if self._store is None:
            raise RuntimeError("the store exists only after start()")
        return self._store

    @property
    def slots(self) -> SlotLeases:
        if self._slots is None:
            raise RuntimeError("the slot leases exist only after start()")
        return self._slots

    def _mono_ms(self) -> int:
        return loop_ms()

    def ring_home(self, key: str) -> str:
        """The node this node's ring names to hold the key's slot."""
        return self.view.owner(slot_name(key_slot(key)))

    # -- life cycle ------------------------------------------------------------------

    async def on_start(self) -> None:
        self._store = CacheStore(self.redis, self.settings.redis_key("cache"))
        me = self.settings.node_id
        table = SlotTable(me, lease_ms=self.c.slot_lease_ms, copy_lease_ms=self.c.lease_ms)
        self._slots = SlotLeases(
            self.redis, self.settings.redis_key("cache-slots"), table, self._mono_ms
        )
        incarnation = self.now_ms()
        self._beats = Heartbeats.for_node(
            self,
            self.view,
            path="/cache/heartbeat",
            interval_ms=self.c.heartbeat_ms,
            incarnation=incarnation,
            on_changes=self._changed,
            on_ack=self._acked,
        )
        times = HomeTimes(
            lease_ms=self.c.lease_ms,
            grace_ms=self.c.grace_ms,
            stall_ms=self.c.suspect_after_ms,
            txn_timeout_ms=self.c.txn_timeout_ms,
        )
        self._home = Home(
            me,
            epoch=incarnation,
            times=times,
            mono=self._mono_ms,
            store=self._store,
            send=self._send,
            owns=lambda key: self.ring_home(key) == me,
            slots=self._slots,
            peers=lambda: [*self.view.ring.members, *self.view.membership.unheard()],
        )
        self._tasks = [
            asyncio.create_task(self._beats.run(), name="cache-heartbeats"),
            asyncio.create_task(self._tick_loop(), name="cache-ticks"),
            asyncio.create_task(self._renew_loop(), name="cache-renewals"),
            asyncio.create_task(self._slot_loop(), name="cache-slots"),
        ]

    async def on_stop(self) -> None:
        tasks = [*self._tasks, *self._background]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def on_leaving(self) -> None:
        if self._home is not None:
            self._home.leave()
        if self._slots is not None:
            self._spawn(self._release_slots())

    async def _release_slots(self) -> None:
        """A leaving node hands its slots back at once, so the next homes need not wait
        for them to run out in Redis (they still wait a copy lease after taking one)."""
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self.slots.round(frozenset())

    def role_state(self) -> dict[str, Any]:
        unacked = self._home.unacked() if self._home is not None else []
        return {
            "membership": self.view.membership.snapshot(),
            "ring": self.view.ring.members,
            "grace_waits_for": unacked,
            "home_slots": self.slots.held() if self._slots is not None else [],
        }

    # -- membership and time -------------------------------------------------------------

    async def _tick_loop(self) -> None:
        """Stall check, membership ticks, expired lines and fences, the per-state gauges."""
        while True:
            self.home.awake()
            now = self._mono_ms()
            self._changed(self.view.tick(now))
            self.local.purge_expired(now)
            for state, count in self.local.store.lines_per_state().items():
                self.mx.lines.labels(state.value).set(count)
            await asyncio.sleep(min(self.c.heartbeat_ms, self.c.lease_ms // 4) / 1000)

    def _changed(self, changes: Changes) -> None:
        if changes:
            self.log.info(
                "membership changed",
                extra={
                    "joined": changes.joined,
                    "left": changes.left,
                    "live": self.view.ring.members,
                },
            )
        if changes.ring_changed:
            self._slots_wake.set()
        if changes.ring_changed and self._home is not None:
            self._home.start_grace()

    def _acked(self, peer: str, sent_ms: int) -> None:
        if self._home is not None:
            self._home.acked(peer, sent_ms)

    def on_peers_changed(self, change: Diff) -> None:
        self._changed(self.view.discovered(change, self._mono_ms()))
        if self._home is not None:
            self._home.forget_peers(change.gone)

    async def _heartbeat(self, request: web.Request) -> web.Response:
        body = await parse_json(request, Heartbeat)
        if self._beats is None:
            raise ApiError(503, "not_ready", "the node is starting")
        return json_response(self._beats.receive(body))

    # -- slot leases ---------------------------------------------------------------------

    async def _slot_loop(self) -> None:
        """One slot round every quarter slot lease: acquire or renew the slots this node's
        ring gives it, release the others. A failed round changes nothing (held slots run
        out at their local lease end). A ring change runs a round at once (the old home
        releases, the new one acquires), and while a wanted slot is held by another node
        rounds come four times as often, so a key's home changes within a few of them."""
        me = self.settings.node_id
        while True:
            self._slots_wake.clear()
            leaving = self._home is not None and self._home.leaving
            wanted = frozenset() if leaving else wanted_slots(self.view.owner, me)
            try:
                changes = await self.slots.round(wanted)
            except (RedisError, OSError, TimeoutError) as exc:
                self.log.warning("slot round failed", extra={"error": type(exc).__name__})
            else:
                if changes.acquired or changes.lost:
                    self.log.info(
                        "slots changed",
                        extra={"acquired": len(changes.acquired), "lost": len(changes.lost)},
                    )
            held = self.slots.held()
            self.mx.home_slots.set(len(held))
            pause_ms = self.c.slot_round_ms
            if wanted - set(held):
                pause_ms = max(10, pause_ms // 4)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slots_wake.wait(), pause_ms / 1000)

    # -- lease renewal -----------------------------------------------------------------

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.c.renew_every_ms / 1000)
            now = self._mono_ms()
            batches = self.local.renewals(now, self.c.renew_within_ms)
            await asyncio.gather(
                *(self._renew_at(home, entries, now) for home, entries in batches.items())
            )

    async def _renew_at(self, home_id: str, entries: list[Renewal], sent: int) -> None:
        """Renew copies granted by `home_id`; a failed call leaves them to run out."""
        me = self.settings.node_id
        for chunk in self._chunks(entries):
            if home_id == me:
                ok = self.home.renew(me, [(k, g[0], g[1]) for k, g in chunk])
            else:
                body = {"node": me, "keys": [k for k, _ in chunk], "grants": [g for _, g in chunk]}
                status, reply = await self._send(home_id, "/cache/home/renew", body)
                answers = reply.get("ok") if status == 200 and isinstance(reply, dict) else None
                if not isinstance(answers, list) or len(answers) != len(chunk):
                    continue
                ok = [a is True for a in answers]
            dropped = self.local.renewed(zip(chunk, ok, strict=True), sent, self._mono_ms())
            self.counts["renewals_sent"] += len(chunk)
            self.counts["renewals_refused"] += dropped
            self.mx.renewals.labels("renewed").inc(len(chunk) - dropped)
            self.mx.renewals.labels("refused").inc(dropped)

    def _chunks(self, entries: list[Renewal]) -> list[list[Renewal]]:
        budget = self.settings.max_body_bytes // 2
        chunks: list[list[Renewal]] = [[]]
        size = 0
        for entry in entries:
            cost = len(entry[0]) + _RENEW_ENTRY_OVERHEAD_BYTES
            if chunks[-1] and size + cost > budget:
                chunks.append([])
                size = 0
            chunks[-1].append(entry)
            size += cost
        return [c for c in chunks if c]

    # -- routes ------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/cache/stats", self._stats),
            web.get("/cache/lines", self._lines),
            web.get("/cache/{key}", self._get),
            web.put("/cache/{key}", self._put),
            web.delete("/cache/{key}", self._delete),
            web.post("/cache/home/read", self._home_read),
            web.post("/cache/home/write", self._home_write),
            web.post("/cache/home/renew", self._home_renew),
            web.post("/cache/home/evicted", self._home_evicted),
            web.post("/cache/bus_read", self._bus_read),
            web.post("/cache/invalidate", self._invalidate),
            web.post("/cache/heartbeat", self._heartbeat),
            web.get("/ring", self._ring),
        ]

    def operations(self) -> list[Operation]:
        errors = {400: "bad input", 404: "no such key", 413: "too large", 503: "unavailable"}
        return [
            Operation("get", "/cache/{key}", "Read a key", None, None, errors),
            Operation("put", "/cache/{key}", "Write a key", m.PutBody, None, errors),
            Operation("delete", "/cache/{key}", "Delete a key", None, None, errors),
            Operation("get", "/cache/stats", "Cache statistics", None, None, {}),
            Operation("get", "/cache/lines", "Local lines and states", None, None, {}),
            Operation("post", "/cache/home/read", "Home: read txn", m.HomeRead, None, errors),
            Operation("post", "/cache/home/write", "Home: write txn", m.HomeWrite, None, errors),
            Operation("post", "/cache/home/renew", "Home: renew copies", m.HomeRenew, None, {}),
            Operation("post", "/cache/home/evicted", "Home: copy gone", m.HomeEvicted, None, {}),
            Operation("post", "/cache/bus_read", "Supply a line", m.BusRead, None, {}),
            Operation("post", "/cache/invalidate", "Drop a line", m.Invalidate, None, {}),
            Operation("post", "/cache/heartbeat", "Node-to-node heartbeat", Heartbeat, None, {}),
            Operation("get", "/ring", "Ring members, or ?key= home", None, None, {400: "bad key"}),
        ]

    # -- client endpoints ----------------------------------------------------------------

    async def _get(self, request: web.Request) -> web.Response:
        key = _path_key(request)
        with self.mx.get_s.time():
            now = self._mono_ms()
            line = self.local.lookup(key, now)
            if line is not None:
                self.counts["hits"] += 1
                self.mx.hits.inc()
                return json_response({"key": key, "value": line.value, "state": line.state.value})
            self.counts["misses"] += 1
            self.mx.misses.inc()
            ticket = self.local.begin_read(key, self.ring_home(key), now)
            ticket, reply = await self._home_call(ticket, "/cache/home/read", {"key": key})
            if not reply.get("found"):
                raise ApiError(404, "not_found", f"no value for key {key!r}")
            value, version = str(reply["value"]), int(reply["version"])
            line = Line.of(value, MesiState(reply["state"]), version)
            stored = self._install(ticket, line, reply)
            shown = stored.state if stored is not None else MesiState.I
            return json_response({"key": key, "value": value, "state": shown.value})

    async def _ring(self, request: web.Request) -> web.Response:
        """The ring as this node sees it, or with ``?key=`` the key's home: a client that
        sends each key to its home keeps every key in one node's memory (no copies, no
        invalidations), so the nodes' capacities add up."""
        key = request.query.get("key")
        if key is None:
            return json_response(self.view.describe())
        problem = m.key_problem(key)
        if problem is not None:
            raise ApiError(400, "bad_request", problem)
        body = {
            "key": key,
            "home": self.ring_home(key),
            "slot": key_slot(key),
            "members": self.view.ring.members,
        }
        return json_response(body)

    async def _put(self, request: web.Request) -> web.Response:
        key = _path_key(request)
        body = await parse_json(request, m.PutBody)
        size = len(body.value.encode("utf-8"))
        if size > self.c.max_value_bytes:
            raise ApiError(
                413, "too_large", f"value is {size} bytes; at most {self.c.max_value_bytes}"
            )
        with self.mx.put_s.time():
            version, state = await self._write(key, body.value)
        return json_response({"key": key, "value": body.value, "version": version, "state": state})

    async def _delete(self, request: web.Request) -> web.Response:
        key = _path_key(request)
        with self.mx.put_s.time():
            version, _ = await self._write(key, None)
        return json_response({"key": key, "deleted": True, "version": version})

    async def _write(self, key: str, value: str | None) -> tuple[int, str]:
        """Write (or delete) through the home; returns (version, this node's state)."""
        ticket = self.local.begin_write(key, self.ring_home(key), self._mono_ms())
        body = {"key": key, "value": value, "dropped": ticket.dropped}
        ticket, reply = await self._home_call(ticket, "/cache/home/write", body)
        version = int(reply["version"])
        if value is None:
            return version, MesiState.I.value
        stored = self._install(ticket, Line.of(value, MesiState(reply["state"]), version), reply)
        return version, (stored.state if stored is not None else MesiState.I).value

    def _install(self, ticket: Ticket, line: Line, reply: dict[str, Any]) -> Line | None:
        grant = grant_of(reply["grant"])
        stored, evicted = self.local.install(ticket, line, grant, self._mono_ms())
        for gone in evicted:
            self.counts["evictions"] += 1
            self.mx.evictions.inc()
            self._spawn(self._after_evict(gone))
        return stored

    async def _after_evict(self, gone: Evicted) -> None:
        """Write back an M line (version-fenced), then tell the home the copy is gone."""
        if gone.line.dirty:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self.store.write_back(gone.key, gone.line.value, gone.line.version)
                self.counts["write_backs"] += 1
                self.mx.write_backs.inc()
        body = {"key": gone.key, "node": self.settings.node_id, "grant": list(gone.held.grant)}
        await self._send(gone.held.home, "/cache/home/evicted", body)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _stats(self, request: web.Request) -> web.Response:
        c = self.counts
        total = c["hits"] + c["misses"]
        h = self.home.counters
        lines = self.local.store.lines_per_state()
        return json_response(
            {
                **c,
                "hit_ratio": round(c["hits"] / total, 4) if total else 0.0,
                "invalidations_sent": h.invalidations_sent,
                "bus_reads": h.bus_reads,
                "home_reads": h.reads,
                "home_memory_reads": h.memory_reads,
                "home_writes": h.writes,
                "home_renewals": h.renewals,
                "home_renewals_refused": h.renewals_refused,
                "home_graces": h.graces,
                "lines": {s.value: n for s, n in lines.items()},
                "line_count": len(self.local.store),
                "bytes_used": self.local.store.bytes_used,
                "capacity": self.c.capacity,
                "max_bytes": self.c.max_bytes,
                "policy": self.c.policy,
                "lease_ms": self.c.lease_ms,
                "renew_every_ms": self.c.renew_every_ms,
                "home_slots": len(self.slots.held()),
                "slot_lease_ms": self.c.slot_lease_ms,
            }
        )

    async def _lines(self, request: web.Request) -> web.Response:
        lines = self.local.lines(self._mono_ms())
        return json_response({"node_id": self.settings.node_id, "lines": lines})

    # -- home endpoints and peer calls -------------------------------------------------------

    async def _home_read(self, request: web.Request) -> web.Response:
        body = await parse_json(request, m.HomeRead)
        return json_response(await self.home.read(body.key, body.node))

    async def _home_write(self, request: web.Request) -> web.Response:
        body = await parse_json(request, m.HomeWrite)
        if body.value is not None and len(body.value.encode("utf-8")) > self.c.max_value_bytes:
            raise ApiError(413, "too_large", "value too large")
        dropped = grant_of(body.dropped) if body.dropped is not None else None
        return json_response(await self.home.write(body.key, body.node, body.value, dropped))

    async def _home_renew(self, request: web.Request) -> web.Response:
        body = await parse_json(request, m.HomeRenew)
        entries = [(k, g[0], g[1]) for k, g in zip(body.keys, body.grants, strict=True)]
        return json_response({"ok": self.home.renew(body.node, entries)})

    async def _home_evicted(self, request: web.Request) -> web.Response:
        body = await parse_json(request, m.HomeEvicted)
        self.home.evicted(body.key, body.node, grant_of(body.grant))
        return json_response({"ok": True})

    async def _bus_read(self, request: web.Request) -> web.Response:
        body = await parse_json(request, m.BusRead)
        status, reply = await self._on_bus_read(body)
        return json_response(reply, status=status)

    async def _on_bus_read(self, body: m.BusRead) -> tuple[int, dict[str, Any]]:
        line = self.local.supply(body.key, grant_of(body.txn), body.downgrade, self._mono_ms())
        self.mx.bus.labels("received").inc()
        if line is None:
            return 404, {"error": {"code": "not_found", "message": "no valid line"}}
        self.counts["bus_reads_served"] += 1
        if body.write_back and line.dirty:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await self.store.write_back(body.key, line.value, line.version)
                self.counts["write_backs"] += 1
                self.mx.write_backs.inc()
        return 200, {"value": line.value, "version": line.version}

    async def _invalidate(self, request: web.Request) -> web.Response:
        body = await parse_json(request, m.Invalidate)
        return json_response(self._on_invalidate(body))

    def _on_invalidate(self, body: m.Invalidate) -> dict[str, Any]:
        self.local.invalidate(body.key, grant_of(body.txn), self._mono_ms())
        self.counts["invalidations_received"] += 1
        self.mx.inval.labels("received").inc()
        return {"acked": True}

    async def _send(self, node: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """Node -> peer message (delivered in-process when the peer is this node)."""
        if path == "/cache/invalidate":
            self.mx.inval.labels("sent").inc()
        elif path == "/cache/bus_read":
            self.mx.bus.labels("sent").inc()
        if node == self.settings.node_id:
            return await self._deliver_local(path, body)
        url = self.peer_urls.get(node)
        if url is None:
            return 0, None
        try:
            return await self.rpc.post_json(url, path, body, retries=0)
        except RpcError:
            self._changed(self.view.unreachable(node, self._mono_ms()))
            return 0, None

    async def _deliver_local(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        if path == "/cache/invalidate":
            return 200, self._on_invalidate(m.Invalidate.model_validate(body))
        if path == "/cache/bus_read":
            return await self._on_bus_read(m.BusRead.model_validate(body))
        if path == "/cache/home/evicted":
            evicted = m.HomeEvicted.model_validate(body)
            self.home.evicted(evicted.key, evicted.node, grant_of(evicted.grant))
            return 200, {"ok": True}
        raise ValueError(f"no local delivery for {path}")

    async def _home_call(
        self, ticket: Ticket, path: str, body: dict[str, Any]
    ) -> tuple[Ticket, dict[str, Any]]:
        """Requester -> the key's home (the ring's); when that node answers ``not_home``
        naming another holder of the key's slot, the request goes to that holder, once.
        Returns the ticket with the home that answered (its copy's renewals go there)."""
        try:
            return ticket, await self._call_home(ticket.home, path, body)
        except ApiError as error:
            holder = error.extra.get("holder") if error.code == "not_home" else None
            if not isinstance(holder, str) or holder == ticket.home:
                raise
        ticket = dataclasses.replace(ticket, home=holder)
        return ticket, await self._call_home(holder, path, body)

    async def _call_home(self, home_id: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One call to `home_id`; an error answer is re-raised as the same ApiError (with
        its extra fields)."""
        me = self.settings.node_id
        if home_id == me:
            if path == "/cache/home/read":
                return await self.home.read(body["key"], me)
            return await self.home.write(body["key"], me, body["value"], body["dropped"])
        url = self.peer_urls.get(home_id)
        if url is None:  # left the cluster between the ring look-up and now
            raise ApiError(503, "unavailable", f"home {home_id} of the key left the cluster")
        timeout_ms = self.c.txn_timeout_ms + 2 * self.c.lease_ms + self.settings.rpc_timeout_ms
        try:
            status, reply = await self.rpc.post_json(
                url, path, {**body, "node": me}, timeout_ms=timeout_ms, retries=0
            )
        except RpcError:
            self._changed(self.view.unreachable(home_id, self._mono_ms()))
            raise ApiError(
                503, "unavailable", f"home {home_id} of the key is unreachable"
            ) from None
        if status == 200 and isinstance(reply, dict):
            return reply
        error = reply.get("error", {}) if isinstance(reply, dict) else {}
        error = error if isinstance(error, dict) else {}
        code = str(error.pop("code", "unavailable"))
        message = str(error.pop("message", f"home answered {status}"))
        raise ApiError(status or 503, code, message, extra=error)


def _path_key(request: web.Request) -> str:
    """The key of a client route; 400 when it is invalid or reserved (a GET of a reserved
    name never gets here: the debug route answers it)."""
    key = request.match_info["key"]
    problem = m.key_problem(key)
    if problem is not None:
        code = "reserved_key" if key in m.RESERVED_KEYS else "bad_request"
        raise ApiError(400, code, problem)
    return key
