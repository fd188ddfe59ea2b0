"""The home-node directory: it orders every transaction on its keys and knows the copies.

Why a directory and not snooping: nodes talk over HTTP, not a shared bus, so there is no
medium on which every node sees every request in the same order. Two writers that each
broadcast invalidations could each see the other's arrive after their own write and both
end in M. Giving each key one home (chosen by the hash ring) makes that home the single
point where the key's transactions are put in order: it runs one transaction per key at a
time and queues the rest, so two writers are serialized by construction, and it knows the
sharers, so a write invalidates exactly the copies that exist instead of broadcasting.

The directory is pure: the shell calls it with the logical time `now` (kept monotonic
here) and carries out the returned plans. A transaction's changes to the record are
applied when it completes; while it runs, the key is locked, so no other transaction can
observe the gap. The life of a transaction:

    request_read/request_write/request_delete -> Plan (started) or Queued
    ack_invalidate(txn, node) for each invalidated copy          (writes)
    supplier_failed(txn, now) when a read's supplier did not answer     (reads)
    may_complete(txn, now) -> bool; then the shell writes memory (writes)
    complete(txn, now) -> Completed (with the next queued plan, if any) | abort(txn, now)

Leases bound how long a node that cannot be reached can keep serving a copy: every copy is
granted until `now + lease_ticks` and must be renewed (`renew_all`, one batch per node
per interval) to stay valid. A write waits for an acknowledgement or the lease end of
every other copy, never for a node's good will. The shell must give nodes a lease shorter
than the home's by its bound on clock drift, counted from when the node sent the request.

Membership is not the directory's business: a node that left stops renewing, so its copies
run out within one lease and are purged; a write that targets one of them waits for that
lease, exactly as for a live node that does not answer.

Invariants (`check_invariants`; the touched key's part after every operation): per key
at most one copy in M or E and then no other copy; versions of completed writes strictly
increase; the running transaction and the queue belong to the key and are registered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from distcluster_worker.coherence.errors import NotReadyError, UnknownTransactionError, require
from distcluster_worker.coherence.invariants import check_directory, check_key
from distcluster_worker.coherence.planner import read_plan, write_plan
from distcluster_worker.coherence.plans import Completed, Plan, Queued, TxnKind
from distcluster_worker.coherence.records import Copy, KeyRecord, Txn
from distcluster_worker.coherence.states import MesiState


class Directory:
    def __init__(self, home: str, *, lease_ticks: int, grace_until: int = 0) -> None:
        """`grace_until`: a home that took over keys (or restarted) cannot know which copies
        its predecessor granted, so until then it grants no copies and completes no write;
        pass the predecessor's last possible lease end (its start plus `lease_ticks`)."""
        if lease_ticks <= 0:
            raise ValueError("lease_ticks must be positive")
        self.home = home
        self.lease_ticks = lease_ticks
        self.grace_until = grace_until
        self._keys: dict[str, KeyRecord] = {}
        self._txns: dict[int, Txn] = {}
        self._next_txn = 1
        self._clock = 0

    # -- requests ---------------------------------------------------------------------

    def request_read(self, key: str, node: str, now: int) -> Plan | Queued:
        return self._request(key, node, TxnKind.READ, now)

    def request_write(
        self, key: str, node: str, now: int, *, dropped: int | None = None
    ) -> Plan | Queued:
        """`dropped`: the grant of the copy the writer held and dropped when it began the
        write (None if it held none). The writer's own recorded copy is invalidated like
        any other unless it is exactly that grant: a copy granted to the writer later
        (another of its writes or reads, ordered here before this one) may still be
        served by it, and this write makes it stale."""
        return self._request(key, node, TxnKind.WRITE, now, dropped)

    def request_delete(
        self, key: str, node: str, now: int, *, dropped: int | None = None
    ) -> Plan | Queued:
        return self._request(key, node, TxnKind.DELETE, now, dropped)

    def _request(
        self, key: str, node: str, kind: TxnKind, now: int, dropped: int | None = None
    ) -> Plan | Queued:
        now = self._tick(now)
        txn = Txn(self._next_txn, key, node, kind, dropped=dropped)
        self._next_txn += 1
        self._txns[txn.txn_id] = txn
        rec = self._keys.setdefault(key, KeyRecord())
        if rec.active is not None:
            rec.queue.append(txn)
            self._check(key)
            return Queued(txn.txn_id, key, node, kind)
        plan = self._start(rec, txn, now)
        self._check(key)
        return plan

    def _start(self, rec: KeyRecord, txn: Txn, now: int) -> Plan:
        rec.purge_expired(now)
        rec.active = txn
        if txn.kind is TxnKind.READ:
            txn.plan = read_plan(rec, txn, now, self.grace_until)
        else:
            txn.plan = write_plan(rec, txn, self.grace_until)
            txn.waits = {n: rec.copies[n].lease_until for n in txn.plan.invalidate}
            rec.issued = txn.plan.version
        return txn.plan

    # -- progress of a running transaction -----------------------------------------------

    def ack_invalidate(self, txn_id: int, node: str, now: int) -> None:
        """`node` confirmed that it dropped its copy for this write."""
        self._tick(now)
        txn = self._running(txn_id)
        if node in txn.waits:
            del txn.waits[node]
            self._keys[txn.key].copies.pop(node, None)
        self._check(txn.key)

    def may_complete(self, txn_id: int, now: int) -> bool:
        """Whether no other copy can still be served: each acknowledged or out of lease."""
        now = self._tick(now)
        txn = self._running(txn_id)
        if not txn.is_write:
            return True
        if now < self.grace_until:
            return False
        return all(lease_until <= now for lease_until in txn.waits.values())

    def complete(self, txn_id: int, now: int) -> Completed:
        now = self._tick(now)
        txn = self._running(txn_id)
        if not self.may_complete(txn_id, now):
            raise NotReadyError(f"txn {txn_id}: copies at {sorted(txn.waits)} may still be served")
        rec = self._keys[txn.key]
        plan = txn.plan
        if plan is None:
            raise UnknownTransactionError(txn_id)
        if txn.is_write:
            self._apply_write(rec, txn, plan)
        else:
            self._apply_read(rec, plan)
        lease_until = 0
        if plan.requester_state.valid:
            lease_until = now + self.lease_ticks
            rec.copies[txn.node] = Copy(plan.requester_state, lease_until, txn_id)
        else:
            rec.copies.pop(txn.node, None)
        started = self._finish(rec, txn, now)
        self._check(txn.key)
        return Completed(
            txn_id,
            txn.key,
            txn.node,
            plan.requester_state,
            rec.version,
            lease_until,
            txn_id,
            started,
        )

    def _apply_read(self, rec: KeyRecord, plan: Plan) -> None:
        for node in plan.downgrade:
            copy = rec.copies.get(node)
            if copy is not None:
                copy.state = MesiState.S

    def _apply_write(self, rec: KeyRecord, txn: Txn, plan: Plan) -> None:
        require(plan.version > rec.version, f"txn {txn.txn_id}: version would not increase")
        for node in txn.waits:
            rec.copies.pop(node, None)
        txn.waits.clear()
        rec.version = plan.version

    def abort(self, txn_id: int, now: int) -> Plan | None:
        """Give up a transaction (the requester timed out or failed); returns the next plan.

        An aborted write that was ready to complete may have written memory already, so its
        outcome is unknown: the home treats it as done (its version becomes the key's, its
        targets are gone) but grants the writer no copy. One not yet ready never wrote
        memory; its version stays burned so that no later write reuses it.
        """
        now = self._tick(now)
        txn = self._txns.get(txn_id)
        if txn is None:
            raise UnknownTransactionError(txn_id)
        rec = self._keys[txn.key]
        if rec.active is not txn:
            rec.queue.remove(txn)
            del self._txns[txn_id]
            self._forget_if_idle(txn.key)
            self._check(txn.key)
            return None
        if txn.is_write and txn.plan is not None and self.may_complete(txn_id, now):
            self._apply_write(rec, txn, txn.plan)
            rec.copies.pop(txn.node, None)
        started = self._finish(rec, txn, now)
        self._check(txn.key)
        return started

    def _finish(self, rec: KeyRecord, txn: Txn, now: int) -> Plan | None:
        """Retire the running transaction and start the next queued one, if any."""
        del self._txns[txn.txn_id]
        rec.active = None
        if rec.queue:
            return self._start(rec, rec.queue.popleft(), now)
        self._forget_if_idle(txn.key)
        return None

    # -- copies that change outside transactions ---------------------------------------------

    def evicted(self, key: str, node: str, grant: int, now: int) -> None:
        """`node` dropped the copy granted by txn `grant` (a stale notice is ignored)."""
        now = self._tick(now)
        rec = self._keys.get(key)
        if rec is None:
            return
        copy = rec.copies.get(node)
        if copy is not None and copy.grant == grant:
            del rec.copies[node]
            if rec.active is not None:
                rec.active.waits.pop(node, None)
            self._forget_if_idle(key)
        self._check(key)

    def renew(self, key: str, node: str, grant: int, now: int) -> int | None:
        """Extend a live copy's lease to `now + lease_ticks`; None when the node must stop
        serving it (the copy is gone, was replaced by a newer grant, or ran out).

        A copy that a running write is invalidating is never renewed: that would let the
        writer wait forever, and the copy is about to be stale. The write keeps the lease
        end it saw when it started (`Txn.waits`), so a renewal that raced with the start
        of the write cannot stretch the writer's wait either.
        """
        now = self._tick(now)
        rec = self._keys.get(key)
        copy = rec.copies.get(node) if rec is not None else None
        if rec is None or copy is None or copy.grant != grant:
            return None
        if copy.lease_until <= now or (rec.active is not None and node in rec.active.waits):
            return None
        copy.lease_until = now + self.lease_ticks
        return copy.lease_until

    def renew_all(self, node: str, grants: Iterable[tuple[str, int]], now: int) -> list[int | None]:
        """`renew` for every (key, grant) a node holds from this home, in one call.

        Why batched: a node renews all its copies from one home in one message per
        interval, so the cost of keeping hot lines is one round trip per home, not per line.
        """
        return [self.renew(key, node, grant, now) for key, grant in grants]

    def supplier_failed(self, txn_id: int, now: int) -> Plan:
        """The supplier of a running read did not answer; the shell reads memory instead.

        A sharer's silence changes nothing (memory holds what every S copy holds). An
        exclusive owner's silence leaves its downgrade unconfirmed: it may still hold the
        line in M or E, so the reader is served from memory without a copy (state I) and
        the owner's record stays exclusive. Returns the plan the transaction now follows.
        """
        self._tick(now)
        txn = self._running(txn_id)
        plan = txn.plan
        if plan is None or txn.is_write:
            raise UnknownTransactionError(txn_id)
        exclusive_supplier = plan.supplier is not None and plan.supplier in plan.downgrade
        requester_state = MesiState.I if exclusive_supplier else plan.requester_state
        txn.plan = replace(
            plan, supplier=None, write_back=None, downgrade=frozenset(),
            requester_state=requester_state,
        )  # fmt: skip
        self._check(txn.key)
        return txn.plan

    # -- queries ------------------------------------------------------------------------

    def version(self, key: str) -> int:
        rec = self._keys.get(key)
        return rec.version if rec is not None else 0

    def copies(self, key: str) -> dict[str, tuple[MesiState, int]]:
        """node -> (state, lease_until) of every copy the home counts."""
        rec = self._keys.get(key)
        if rec is None:
            return {}
        return {n: (c.state, c.lease_until) for n, c in sorted(rec.copies.items())}

    def owner(self, key: str) -> str | None:
        rec = self._keys.get(key)
        return rec.owner() if rec is not None else None

    def sharers(self, key: str) -> frozenset[str]:
        rec = self._keys.get(key)
        if rec is None:
            return frozenset()
        return frozenset(n for n, c in rec.copies.items() if c.state is MesiState.S)

    def active(self, key: str) -> int | None:
        rec = self._keys.get(key)
        return rec.active.txn_id if rec is not None and rec.active is not None else None

    def queued(self, key: str) -> list[int]:
        rec = self._keys.get(key)
        return [t.txn_id for t in rec.queue] if rec is not None else []

    def keys(self) -> list[str]:
        return sorted(self._keys)

    def check_invariants(self) -> None:
        """The full check, O(keys): every record and the transaction registry (tests and
        the simulation run it after every step)."""
        check_directory(self._keys, self._txns)

    def _check(self, key: str) -> None:
        """The invariants of the one record an operation touched. Checking every record
        after every operation made each request O(keys) and was most of a busy home's
        CPU; an operation changes one key only, so its record is what can break."""
        rec = self._keys.get(key)
        if rec is not None:
            check_key(key, rec, self._txns)

    # -- helpers ------------------------------------------------------------------------

    def _tick(self, now: int) -> int:
        self._clock = max(self._clock, now)
        return self._clock

    def _running(self, txn_id: int) -> Txn:
        txn = self._txns.get(txn_id)
        if txn is None or self._keys[txn.key].active is not txn:
            raise UnknownTransactionError(txn_id)
        return txn

    def _forget_if_idle(self, key: str) -> None:
        """Drop an empty record, except its versions, which must keep growing."""
        rec = self._keys.get(key)
        if rec is not None and rec.idle() and rec.version == 0 and rec.issued == 0:
            del self._keys[key]
