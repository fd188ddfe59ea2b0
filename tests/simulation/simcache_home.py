"""The home side of a simulated cache node: `cache_role/home.py` as message handlers.

The same `Directory` core orders each key's transactions; this class does what the shell's
handlers do with the plans, one message or one tick at a time instead of with awaits:

* read: `bus_read` the supplier; 200 gives the value, 404 means no copy (memory is read),
  no answer is reported through `supplier_failed` (memory is read, no copy is granted);
* write: `invalidate` every other copy; once every call answered or timed out, poll
  `may_complete` each tick; when ready, write memory, and complete on the *next* tick, so a
  crash can fall between the Redis write and the answer, as it can between two awaits;
* a queued request waits at most `txn_timeout_ms`, then is aborted and answered 503;
* a failing Redis call aborts the transaction and answers 503;
* slots, as `home.py` does: a request for a key whose slot this node does not hold (or
  whose view names another home) is refused with 503 ``not_home`` naming the holder; a
  read or write completes with a copy only while the slot is held and past its grace
  (else the value without a copy, state I); a write waits for that grace and lands in
  memory only if the slot still holds this node's tenure; renewals of other keys fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simcache_world import Msg, RedisDownError

from distcluster_worker.cache_role.slots import key_slot
from distcluster_worker.coherence import (
    Directory,
    Plan,
    Queued,
    TxnKind,
    UnknownTransactionError,
)

if TYPE_CHECKING:
    from simcache_node import SimNode


@dataclass
class _Waiter:
    msg: Msg
    deadline_ms: int


@dataclass
class _WriteRun:
    plan: Plan
    msg: Msg
    pending: int
    written_version: int | None = None


class SimHome:
    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.epoch = node.incarnation
        timing = node.world.timing
        self.directory = Directory(
            node.node_id, lease_ticks=timing.lease_ms, grace_until=node.now + timing.grace_ms
        )
        self._waiters: dict[int, _Waiter] = {}
        self._writes: dict[int, _WriteRun] = {}

    # -- slots -------------------------------------------------------------------------------

    def acting(self, key: str) -> bool:
        node = self.node
        return node.ring_home(key) == node.node_id and node.slots.holds(key_slot(key), node.now)

    def may_grant(self, key: str) -> bool:
        return self.acting(key) and self.node.now >= self.node.slots.grants_from(key_slot(key))

    def _refuse(self, msg: Msg) -> bool:
        """Answer 503 not_home (naming the holder) unless this node acts as the key's home."""
        key = msg.body["key"]
        if self.acting(key):
            return False
        holder = self.node.slots.holder(key_slot(key), self.node.now)
        self.node.reply(msg, 503, {"code": "not_home", "holder": holder})
        return True

    # -- requests ------------------------------------------------------------------------

    def on_read(self, msg: Msg) -> None:
        if self._refuse(msg):
            return
        key, node = msg.body["key"], msg.body["node"]
        self._begin(self.directory.request_read(key, node, self.node.now), msg)

    def on_write(self, msg: Msg) -> None:
        if self._refuse(msg):
            return
        key, node, value = msg.body["key"], msg.body["node"], msg.body["value"]
        dropped = msg.body["dropped"]
        mine = dropped[1] if dropped is not None and dropped[0] == self.epoch else None
        d = self.directory
        request = d.request_delete if value is None else d.request_write
        self._begin(request(key, node, self.node.now, dropped=mine), msg)

    def on_renew(self, msg: Msg) -> None:
        entries = msg.body["entries"]
        self.node.reply(msg, 200, {"ok": self.renew(msg.body["node"], entries)})

    def renew(self, node: str, entries: list[tuple[str, tuple[int, int]]]) -> list[bool]:
        mine = [
            i
            for i, (key, grant) in enumerate(entries)
            if grant[0] == self.epoch and self.may_grant(key)
        ]
        leases = self.directory.renew_all(
            node, [(entries[i][0], entries[i][1][1]) for i in mine], self.node.now
        )
        ok = [False] * len(entries)
        for i, lease in zip(mine, leases, strict=True):
            ok[i] = lease is not None
        return ok

    def on_evicted(self, msg: Msg) -> None:
        grant = msg.body["grant"]
        if grant[0] == self.epoch:
            self.directory.evicted(msg.body["key"], msg.body["node"], grant[1], self.node.now)
        self.node.reply(msg, 200, {})

    def _begin(self, request: Plan | Queued, msg: Msg) -> None:
        if isinstance(request, Plan):
            self._run(request, msg)
        else:
            deadline = self.node.now + self.node.world.timing.txn_timeout_ms
            self._waiters[request.txn_id] = _Waiter(msg, deadline)

    def _run(self, plan: Plan, msg: Msg) -> None:
        if plan.kind is TxnKind.READ:
            self._read(plan, msg)
        else:
            self._write(plan, msg)

    def _dispatch(self, plan: Plan | None) -> None:
        """Hand a plan the directory started to its waiting request, or abort it."""
        if plan is None:
            return
        waiter = self._waiters.pop(plan.txn_id, None)
        if waiter is None:
            self._abort(plan.txn_id)
        else:
            self._run(plan, waiter.msg)

    def _abort(self, txn_id: int) -> None:
        try:
            self._dispatch(self.directory.abort(txn_id, self.node.now))
        except UnknownTransactionError:
            pass

    def _fail(self, plan: Plan, msg: Msg, status: int, code: str) -> None:
        self._abort(plan.txn_id)
        self.node.reply(msg, status, {"code": code})

    # -- reads ---------------------------------------------------------------------------

    def _read(self, plan: Plan, msg: Msg) -> None:
        if plan.supplier is None:
            self._read_memory(plan, msg)
            return
        body = {
            "key": plan.key,
            "txn": (self.epoch, plan.txn_id),
            "downgrade": plan.supplier in plan.downgrade,
            "write_back": plan.write_back == plan.supplier,
        }

        def supplied(status: int, reply: dict[str, Any]) -> None:
            if status == 200:
                self._read_done(plan, msg, reply["value"], reply["version"])
                return
            if status != 404:
                self.directory.supplier_failed(plan.txn_id, self.node.now)
            self._read_memory(plan, msg)

        self.node.call(
            plan.supplier, "bus_read", body, self.node.rpc_timeout(plan.supplier), supplied
        )

    def _read_memory(self, plan: Plan, msg: Msg) -> None:
        try:
            value, version = self.node.redis().read(plan.key)
        except RedisDownError:
            self._fail(plan, msg, 503, "unavailable")
            return
        if value is None:
            self._abort(plan.txn_id)
            self.node.reply(msg, 200, {"found": False})
            return
        self._read_done(plan, msg, value, version)

    def _read_done(self, plan: Plan, msg: Msg, value: str, version: int) -> None:
        if not self.may_grant(plan.key):
            self._abort(plan.txn_id)
            answer = self._uncached(plan, found=True, value=value, version=version)
            self.node.reply(msg, 200, answer)
            return
        done = self.directory.complete(plan.txn_id, self.node.now)
        reply = {
            "found": True,
            "value": value,
            "version": version,
            "state": done.state.value,
            "grant": (self.epoch, done.grant),
        }
        self.node.reply(msg, 200, reply)
        self._dispatch(done.started)

    # -- writes --------------------------------------------------------------------------

    def _write(self, plan: Plan, msg: Msg) -> None:
        targets = sorted(plan.invalidate)
        run = _WriteRun(plan, msg, pending=len(targets))
        self._writes[plan.txn_id] = run
        body = {"key": plan.key, "txn": (self.epoch, plan.txn_id)}
        for target in targets:

            def acked(status: int, _: dict[str, Any], target: str = target) -> None:
                if status == 200 and plan.txn_id in self._writes:
                    self.directory.ack_invalidate(plan.txn_id, target, self.node.now)
                run.pending -= 1

            self.node.call(target, "invalidate", body, self.node.rpc_timeout(target), acked)

    def tick(self) -> None:
        """Time out queued requests; move ready writes on by one step each."""
        now = self.node.now
        for txn_id in sorted(self._waiters):
            waiter = self._waiters[txn_id]
            if waiter.deadline_ms <= now:
                del self._waiters[txn_id]
                self.node.reply(waiter.msg, 503, {"code": "busy"})
                self._abort(txn_id)
        for txn_id in sorted(self._writes):
            run = self._writes.get(txn_id)
            if run is not None:
                self._advance_write(run)

    def _uncached(self, plan: Plan, **answer: Any) -> dict[str, Any]:
        return {**answer, "state": "I", "grant": (self.epoch, plan.txn_id)}

    def _advance_write(self, run: _WriteRun) -> None:
        plan, now = run.plan, self.node.now
        if run.written_version is not None:
            del self._writes[plan.txn_id]
            if not self.may_grant(plan.key) or not self.directory.may_complete(plan.txn_id, now):
                self._abort(plan.txn_id)
                self.node.reply(run.msg, 200, self._uncached(plan, version=run.written_version))
                return
            done = self.directory.complete(plan.txn_id, now)
            reply = {
                "version": run.written_version,
                "state": done.state.value,
                "grant": (self.epoch, done.grant),
            }
            self.node.reply(run.msg, 200, reply)
            self._dispatch(done.started)
            return
        if not self.acting(plan.key):
            del self._writes[plan.txn_id]
            self._fail(plan, run.msg, 503, "not_home")
            return
        if run.pending or not self.directory.may_complete(plan.txn_id, now):
            return
        if not self.may_grant(plan.key):
            return  # the grace of a slot just acquired
        slot, world = key_slot(plan.key), self.node.world
        tenure = self.node.slots.tenure(slot)
        if not world.slot_store.fenced(slot, self.node.node_id, tenure, world.true_ms):
            del self._writes[plan.txn_id]
            self._fail(plan, run.msg, 503, "not_home")
            world.count("write fenced")
            return
        value = run.msg.body["value"]
        try:
            run.written_version = self.node.redis().write(plan.key, value)
        except RedisDownError:
            del self._writes[plan.txn_id]
            self._fail(plan, run.msg, 503, "unavailable")
