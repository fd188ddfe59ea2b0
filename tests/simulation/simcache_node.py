"""A simulated cache node: `cache_role/node.py` as message handlers over the same cores.

The node's lines are a real `LocalCache` (a `LineStore` plus the `CopyTable` core), its
home a `SimHome` around a real `Directory`. What the shell does with awaits happens here
as calls with continuations: `call` sends a request and registers what to do with the
reply, or with a timeout (status 0) once the caller's own clock passes the deadline, as
the RPC client would. A call to the node itself is delivered in-process (no loss, no cut,
no timeout), like the shell's local delivery.

Views and slots: each node hears its peers (a heartbeat every `heartbeat_ms`, and any
message counts) and drops from its view a peer silent for `dead_after_ms`; the ring over
its view names the node that should hold each key's slot. Every quarter slot lease (and
at once when the view changes) it runs a slot round on the world's `InMemorySlots` (Redis),
with a random delay before Redis runs it, and applies the answer; a round fails with the
flaky Redis. A request goes to the home its view names; a ``not_home`` answer that names
another holder sends it there, once, as the shell does.

Client operations are recorded in the world's `History` with the step they started and
answered at; hits answer in the step they start. A node that crashes is replaced by a new
`SimNode` (empty, new incarnation); replies addressed to the old one find no call and are
dropped, like answers on a connection whose process died.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from simcache_home import SimHome
from simcache_world import Clock, History, Memory, Msg, Op, RedisDownError

from distcluster_worker.cache_role.local import Evicted, LocalCache
from distcluster_worker.cache_role.slots import key_slot
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
from distcluster_worker.ring import HashRing

if TYPE_CHECKING:
    from simcache_run import CacheSim

OnReply = Callable[[int, dict[str, Any]], None]
NO_TIMEOUT = 1 << 62


@functools.cache
def ring_of(members: frozenset[str]) -> HashRing:
    return HashRing(sorted(members))


@dataclass
class _Call:
    deadline_ms: int
    on_reply: OnReply


class SimNode:
    def __init__(self, world: CacheSim, node_id: str, incarnation: int, clock: Clock) -> None:
        self.world = world
        self.node_id = node_id
        self.incarnation = incarnation
        self.clock = clock
        timing = world.timing
        store = LineStore(world.spec.capacity, world.spec.policy)
        copies = CopyTable(timing.serve_ms, fence_keep_ms=2 * timing.lease_ms)
        self.local = LocalCache(store, copies)
        self.slots = SlotTable(
            node_id, lease_ms=timing.slot_lease_ms, copy_lease_ms=timing.lease_ms
        )
        self.heard = {n: self.now for n in world.node_ids if n != node_id}
        self._view = frozenset(world.node_ids)
        self._next_beat = self.now
        self._next_round = self.now
        self.home = SimHome(self)
        self.ops: dict[int, Op] = {}
        self._calls: dict[int, _Call] = {}
        self._next_renewal = self.now + timing.renew_every_ms
        self._handlers: dict[str, Callable[[Msg], None]] = {
            "home_read": self.home.on_read,
            "home_write": self.home.on_write,
            "home_renew": self.home.on_renew,
            "home_evicted": self.home.on_evicted,
            "bus_read": self._on_bus_read,
            "invalidate": self._on_invalidate,
            "heartbeat": lambda msg: None,
        }

    @property
    def now(self) -> int:
        return self.clock.at(self.world.t)

    @property
    def history(self) -> History:
        return self.world.history

    def redis(self) -> Memory:
        """Memory as this node reaches it (raises RedisDownError while it is cut off)."""
        if self.world.redis_cut(self.node_id):
            raise RedisDownError("cut off from Redis")
        return self.world.memory

    def rpc_timeout(self, dst: str) -> int:
        return NO_TIMEOUT if dst == self.node_id else self.world.timing.rpc_timeout_ms

    # -- the wire --------------------------------------------------------------------------

    def call(
        self, dst: str, kind: str, body: dict[str, Any], timeout_ms: int, on_reply: OnReply
    ) -> None:
        call_id = self.world.new_call_id()
        self._calls[call_id] = _Call(min(NO_TIMEOUT, self.now + timeout_ms), on_reply)
        self.world.send(Msg(self.node_id, dst, kind, call_id, body))

    def reply(self, msg: Msg, status: int, body: dict[str, Any]) -> None:
        self.world.send(Msg(self.node_id, msg.src, "reply", msg.call, {"status": status, **body}))

    def deliver(self, msg: Msg) -> None:
        if msg.src != self.node_id:
            self.heard[msg.src] = self.now
        if msg.kind == "reply":
            call = self._calls.pop(msg.call, None)
            if call is not None:
                call.on_reply(msg.body["status"], msg.body)
            return
        self._handlers[msg.kind](msg)

    def tick(self) -> None:
        now = self.now
        for call_id in sorted(self._calls):
            call = self._calls.get(call_id)
            if call is not None and call.deadline_ms <= now:
                del self._calls[call_id]
                call.on_reply(0, {})
        self._membership(now)
        self.home.tick()
        if now >= self._next_renewal:
            # The shell's renewal and tick loops both run about every quarter lease; a
            # copy that runs out in between is dropped when a lookup sees it.
            self._next_renewal = now + self.world.timing.renew_every_ms
            self._renew_round()
            self.local.purge_expired(now)

    # -- views and slots -------------------------------------------------------------------

    def ring_home(self, key: str) -> str:
        """The node this node's view names to hold the key's slot."""
        return ring_of(self._view).owner(slot_name(key_slot(key)))

    def _membership(self, now: int) -> None:
        timing = self.world.timing
        if now >= self._next_beat:
            self._next_beat = now + timing.heartbeat_ms
            for peer in sorted(self.heard):
                self.world.send(Msg(self.node_id, peer, "heartbeat", 0, {}))
        alive = {p for p, t in self.heard.items() if now - t < timing.dead_after_ms}
        view = frozenset({self.node_id, *alive})
        if view != self._view:
            self._view = view
            self.world.count("view changed")
            self._next_round = now
        if now >= self._next_round:
            self._slot_round(now)

    def _slot_round(self, now: int) -> None:
        """Plan a round now; the world runs it in Redis a little later, or never."""
        wanted = wanted_slots(ring_of(self._view).owner, self.node_id)
        sent = self.slots.plan(wanted, now)
        pause = self.world.timing.slot_round_ms
        if wanted - set(self.slots.held(now)):
            pause = max(10, pause // 4)
        self._next_round = now + pause
        self.world.slot_round(self, sent)

    # -- client operations ---------------------------------------------------------------

    def client_read(self, key: str) -> None:
        t = self.world.t
        op = self.history.begin(self.node_id, key, "read", t)
        line = self.local.lookup(key, self.now)
        if line is not None:
            self.history.finish(op, t, line.value)
            self.world.count("hit")
            return
        self.world.count("miss")
        ticket = self.local.begin_read(key, self.ring_home(key), self.now)
        self.ops[op.op_id] = op
        body = {"key": key, "node": self.node_id}
        self._home_call(ticket, "home_read", body, lambda t, s, b: self._read_done(op, t, s, b))

    def _home_call(
        self,
        ticket: Ticket,
        kind: str,
        body: dict[str, Any],
        done: Callable[[Ticket, int, dict[str, Any]], None],
        retry: bool = True,
    ) -> None:
        """Call the ticket's home; on ``not_home`` naming another holder, call it, once."""

        def answered(status: int, reply: dict[str, Any]) -> None:
            holder = reply.get("holder") if reply.get("code") == "not_home" else None
            if retry and isinstance(holder, str) and holder != ticket.home:
                self.world.count("not_home retried")
                again = replace(ticket, home=holder)
                self._home_call(again, kind, body, done, retry=False)
                return
            done(ticket, status, reply)

        home = ticket.home
        self.call(home, kind, body, self._home_timeout(home), answered)

    def _read_done(self, op: Op, ticket: Ticket, status: int, body: dict[str, Any]) -> None:
        self.ops.pop(op.op_id, None)
        if status != 200:
            self.history.fail(op)
            return
        if not body["found"]:
            self.history.finish(op, self.world.t, None)
            return
        line = Line.of(body["value"], MesiState(body["state"]), body["version"])
        self._install(ticket, line, body["grant"])
        self.history.finish(op, self.world.t, body["value"])

    def client_write(self, key: str, value: str | None) -> None:
        """A PUT (or, with `value` None, a DELETE) through the key's home."""
        kind = "delete" if value is None else "write"
        op = self.history.begin(self.node_id, key, kind, self.world.t, value)
        ticket = self.local.begin_write(key, self.ring_home(key), self.now)
        self.ops[op.op_id] = op
        body = {"key": key, "node": self.node_id, "value": value, "dropped": ticket.dropped}
        self._home_call(ticket, "home_write", body, lambda t, s, b: self._write_done(op, t, s, b))

    def _write_done(self, op: Op, ticket: Ticket, status: int, body: dict[str, Any]) -> None:
        self.ops.pop(op.op_id, None)
        if status != 200:
            self.history.fail(op)
            return
        if op.value_in is not None:
            line = Line.of(op.value_in, MesiState(body["state"]), body["version"])
            self._install(ticket, line, body["grant"])
        self.history.finish(op, self.world.t)

    def _home_timeout(self, home: str) -> int:
        return NO_TIMEOUT if home == self.node_id else self.world.timing.home_call_timeout_ms

    def _install(self, ticket: Ticket, line: Line, grant: tuple[int, int]) -> None:
        stored, evicted = self.local.install(ticket, line, tuple(grant), self.now)  # type: ignore[arg-type]
        self.world.count("installed" if stored is not None else "install refused")
        for gone in evicted:
            self._after_evict(gone)

    def _after_evict(self, gone: Evicted) -> None:
        self.world.count("evicted")
        if gone.line.dirty:
            try:
                self.redis().write_back(gone.key, gone.line.value, gone.line.version)
            except RedisDownError:
                pass
        body = {"key": gone.key, "node": self.node_id, "grant": gone.held.grant}
        home = gone.held.home
        self.call(home, "home_evicted", body, self.rpc_timeout(home), lambda s, b: None)

    # -- peers' requests -----------------------------------------------------------------

    def _on_bus_read(self, msg: Msg) -> None:
        b = msg.body
        line = self.local.supply(b["key"], tuple(b["txn"]), b["downgrade"], self.now)
        if line is None:
            self.reply(msg, 404, {})
            return
        if b["write_back"] and line.dirty:
            try:
                self.redis().write_back(b["key"], line.value, line.version)
            except RedisDownError:
                pass
        self.reply(msg, 200, {"value": line.value, "version": line.version})

    def _on_invalidate(self, msg: Msg) -> None:
        self.local.invalidate(msg.body["key"], tuple(msg.body["txn"]), self.now)
        self.reply(msg, 200, {"acked": True})

    # -- renewals ------------------------------------------------------------------------

    def _renew_round(self) -> None:
        sent = self.now
        batches = self.local.renewals(sent, self.world.timing.renew_within_ms)
        for home, entries in sorted(batches.items()):
            self.world.count("renewal batch")
            if home == self.node_id:
                self._renewed(entries, self.home.renew(self.node_id, entries), sent)
                continue

            def answered(
                status: int, body: dict[str, Any], entries: list[Renewal] = entries
            ) -> None:
                if status == 200:
                    self._renewed(entries, body["ok"], sent)

            body = {"node": self.node_id, "entries": entries}
            self.call(home, "home_renew", body, self.rpc_timeout(home), answered)

    def _renewed(self, entries: list[Renewal], ok: list[bool], sent: int) -> None:
        dropped = self.local.renewed(zip(entries, ok, strict=True), sent, self.now)
        self.world.count("renewal refused", dropped)
        self.world.count("renewed", len(entries) - dropped)
