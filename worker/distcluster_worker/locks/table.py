"""`LockTable`: the replicated state machine of the lock manager.

Every node feeds it the same committed Raft entries in index order, so it must be a pure
function of that sequence: no clock, no randomness, and nothing whose order could differ
between replicas (queues are lists; anything taken from a dict or set is sorted).

Each command first moves the table's clock to `max(clock, now_ms)` (the leader stamps
`now_ms`; time never runs backwards even if leadership moves to a node whose clock lags)
and settles everything due by then, in time order: expired leases (`Expired`, then the
lock passes to the queue) and waiters out of patience (`Refused` "timeout"). Only then does
the command do its own work. A lease granted while settling ends at `clock + ttl_ms` with
`ttl_ms > 0`, so settling always terminates.

Fencing tokens are the Raft index of the entry that granted, so they increase per
resource for free; shared holders granted by one entry share it.

Fairness: a request is granted at once only if the queue is empty (or, for a re-acquire,
the owner already holds a strong enough mode). Otherwise it queues, and the queue hands
over from its head: an exclusive head once nobody else holds, a shared head together with
the run of shared waiters behind it once no exclusive lease remains. A writer behind
readers therefore blocks later readers, and nobody starves.

An owner has at most one waiter per resource; a second acquire while it waits is refused
("locked"), because two queued requests of one owner would deadlock on themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distcluster_worker.locks import invariants, snapshot
from distcluster_worker.locks.commands import (
    Acquire,
    Cancel,
    Command,
    Expire,
    Invalid,
    Release,
    Renew,
    parse_command,
)
from distcluster_worker.locks.deadlines import LEASE, WAITER, Deadline, DeadlineHeap
from distcluster_worker.locks.errors import LockInvariantError, LockSnapshotError, require
from distcluster_worker.locks.outcomes import (
    EXCLUSIVE,
    SHARED,
    Cancelled,
    Expired,
    Granted,
    Mode,
    Outcome,
    Queued,
    Refused,
    Released,
    Renewed,
)
from distcluster_worker.locks.state import Hold, Resource, TableState, Waiter, conflicts
from distcluster_worker.locks.waitgraph import find_cycle

# The deadline heap is never rebuilt below this size: small heaps are cheap anyway.
_MIN_COMPACT = 1024


class LockTable:
    """Locks with leases, fencing tokens, FIFO queues and deadlock refusal."""

    def __init__(self, *, dedup_capacity: int = 100_000) -> None:
        if isinstance(dedup_capacity, bool) or not isinstance(dedup_capacity, int):
            raise ValueError("dedup_capacity must be an integer")
        if dedup_capacity < 0:
            raise ValueError("dedup_capacity must be >= 0")
        self._s = TableState(dedup_capacity=dedup_capacity)
        self._deadlines = DeadlineHeap()
        self._compact_at = _MIN_COMPACT

    # ----------------------------------------------------------------- public API

    @property
    def clock_ms(self) -> int:
        return self._s.clock_ms

    @property
    def last_index(self) -> int:
        """The Raft index of the last command applied (invalid ones are not counted)."""
        return self._s.last_index

    def apply(self, index: int, command: Mapping[str, Any]) -> list[Outcome]:
        """Apply the committed entry at Raft `index`; never raises on bad input.

        A malformed command, or an `index` not above the last applied one, yields a single
        `Refused("invalid")` and leaves the table exactly as it was.
        """
        parsed = parse_command(command)
        if isinstance(parsed, Invalid):
            return [Refused(parsed.request_id, "invalid", parsed.message)]
        if isinstance(index, bool) or not isinstance(index, int) or index <= self._s.last_index:
            request_id = "" if isinstance(parsed, Expire) else parsed.request_id
            message = f"index {index!r} is not after the last applied {self._s.last_index}"
            return [Refused(request_id, "invalid", message)]
        self._s.last_index = index
        out: list[Outcome] = []
        self._settle(index, parsed.now_ms, out)
        self._dispatch(index, parsed, out)
        self._compact_deadlines()
        return out

    def next_deadline_ms(self) -> int | None:
        """Earliest lease expiry or waiter deadline: when the leader should propose "expire"."""
        return self._deadlines.earliest(self._is_current)

    def view(self, resource: str) -> dict[str, Any]:
        """Holders (by owner) and waiters (queue order) of one resource, JSON-ready."""
        res = self._s.resources.get(resource)
        holders = [] if res is None else [res.holders[o] for o in sorted(res.holders)]
        waiters = [] if res is None else res.queue
        return {
            "resource": resource,
            "holders": [
                {
                    "owner": h.owner,
                    "mode": h.mode,
                    "token": h.token,
                    "expires_at_ms": h.expires_at_ms,
                }
                for h in holders
            ],
            "waiters": [
                {
                    "owner": w.owner,
                    "mode": w.mode,
                    "request_id": w.request_id,
                    "deadline_ms": w.deadline_ms,
                }
                for w in waiters
            ],
        }

    def resources(self) -> list[str]:
        return sorted(self._s.resources)

    def stats(self) -> dict[str, int]:
        live = self._s.resources.values()
        return {
            "resources": len(self._s.resources),
            "holders": sum(len(r.holders) for r in live),
            "waiters": sum(len(r.queue) for r in live),
        }

    def snapshot(self) -> str:
        """The whole state as canonical JSON (equal states give equal text)."""
        return snapshot.encode(self._s)

    @classmethod
    def restore(cls, data: str) -> LockTable:
        """A table equal to the one that produced `data`; raises LockSnapshotError if bad."""
        state = snapshot.decode(data)
        table = cls(dedup_capacity=state.dedup_capacity)
        table._s = state
        table._deadlines.replace_all(table._live_deadlines())
        try:
            table.check_invariants()
        except LockInvariantError as err:
            raise LockSnapshotError(f"snapshot breaks an invariant: {err}") from err
        return table

    def check_invariants(self) -> None:
        """Raise LockInvariantError if any rule of the table is broken."""
        invariants.check(self._s, self._deadlines.entries(), self._live_deadlines())

    # ------------------------------------------------------------ time and deadlines

    def _settle(self, index: int, now_ms: int, out: list[Outcome]) -> None:
        """Advance the clock, then expire leases and time out waiters due by it, in order."""
        self._s.clock_ms = max(self._s.clock_ms, now_ms)
        while (due := self._deadlines.pop_due(self._s.clock_ms, self._is_current)) is not None:
            _, kind, name, ident = due
            res = self._s.resources[name]
            if kind == LEASE:
                hold = res.holders.pop(ident)
                out.append(Expired(name, ident, hold.token))
            else:
                self._remove_waiter(ident)
                outcome = Refused(
                    ident,
                    "timeout",
                    f"not granted {name!r} before the deadline",
                    holders=tuple(sorted(res.holders)),
                )
                self._s.record(ident, outcome)
                out.append(outcome)
            self._hand_over(index, res, out)
            self._forget_if_empty(res)

    def _is_current(self, entry: Deadline) -> bool:
        """Whether a heap entry still describes a live lease or waiter."""
        time_ms, kind, name, ident = entry
        res = self._s.resources.get(name)
        if res is None:
            return False
        if kind == LEASE:
            hold = res.holders.get(ident)
            return hold is not None and hold.expires_at_ms == time_ms
        if self._s.pending.get(ident) != name:
            return False
        return any(w.request_id == ident and w.deadline_ms == time_ms for w in res.queue)

    def _live_deadlines(self) -> list[Deadline]:
        """One heap entry per live lease and waiter, derived from the state."""
        entries: list[Deadline] = []
        for name, res in self._s.resources.items():
            entries.extend((h.expires_at_ms, LEASE, name, h.owner) for h in res.holders.values())
            entries.extend((w.deadline_ms, WAITER, name, w.request_id) for w in res.queue)
        return entries

    def _compact_deadlines(self) -> None:
        """Rebuild the heap once stale entries (from renewals, releases) could dominate it.

        The next rebuild waits until the heap has doubled again, so the cost of rebuilding
        is spread over at least as many pushes: O(1) amortized per command.
        """
        if len(self._deadlines) > self._compact_at:
            self._deadlines.replace_all(self._live_deadlines())
            self._compact_at = 2 * len(self._deadlines) + _MIN_COMPACT

    # ---------------------------------------------------------------- the commands

    def _dispatch(self, index: int, command: Command, out: list[Outcome]) -> None:
        if isinstance(command, Expire):
            return
        if isinstance(command, Cancel):
            self._cancel(index, command, out)
            return
        replay = self._replay(command.request_id)
        if replay is not None:
            out.append(replay)
        elif isinstance(command, Acquire):
            self._acquire(index, command, out)
        elif isinstance(command, Release):
            self._release(index, command, out)
        else:
            self._renew(command, out)

    def _replay(self, request_id: str) -> Outcome | None:
        """The answer to a retry: Queued while it waits, else its recorded final outcome."""
        name = self._s.pending.get(request_id)
        if name is not None:
            return Queued(request_id, name, self._s.resources[name].position_of(request_id))
        return self._s.dedup.get(request_id)

    def _acquire(self, index: int, cmd: Acquire, out: list[Outcome]) -> None:
        res = self._s.resources.get(cmd.resource)
        if res is None:
            res = Resource(cmd.resource, last_token=self._s.token_floor)
            self._s.resources[cmd.resource] = res
        outcome = self._decide_acquire(index, res, cmd)
        if not isinstance(outcome, Queued):
            self._s.record(cmd.request_id, outcome)
        out.append(outcome)
        self._forget_if_empty(res)

    def _decide_acquire(self, index: int, res: Resource, cmd: Acquire) -> Outcome:
        """Grant, queue or refuse one acquire (the rules are in the module docstring)."""
        held = res.holders.get(cmd.owner)
        if held is not None and (held.mode == EXCLUSIVE or cmd.mode == SHARED):
            return Granted(
                cmd.request_id, res.name, cmd.owner, held.mode, held.token, held.expires_at_ms
            )
        if self._grantable_now(res, cmd.owner, cmd.mode):
            return self._grant(index, res, cmd.request_id, cmd.owner, cmd.mode, cmd.ttl_ms)
        holders = tuple(sorted(res.holders))
        if res.name in self._s.waiting_on.get(cmd.owner, ()):  # the index, not a queue scan
            message = f"{cmd.owner!r} already waits for {res.name!r}"
            return Refused(cmd.request_id, "locked", message, holders=holders)
        if cmd.wait_ms == 0:
            return Refused(cmd.request_id, "locked", f"{res.name!r} is held", holders=holders)
        cycle = self._deadlock_cycle(res, cmd.owner, cmd.mode)
        if cycle is not None:
            message = "waiting would deadlock: " + " -> ".join(cycle)
            return Refused(cmd.request_id, "deadlock", message, cycle=cycle)
        waiter = Waiter(
            cmd.request_id, cmd.owner, cmd.mode, cmd.ttl_ms, self._s.clock_ms + cmd.wait_ms
        )
        return self._enqueue(res, waiter)

    def _release(self, index: int, cmd: Release, out: list[Outcome]) -> None:
        res = self._s.resources.get(cmd.resource)
        hold = None if res is None else res.holders.get(cmd.owner)
        if res is None or hold is None or hold.token != cmd.token:
            outcome: Outcome = self._not_holder(cmd.request_id, cmd.resource, cmd.owner)
            self._s.record(cmd.request_id, outcome)
            out.append(outcome)
            return
        del res.holders[cmd.owner]
        outcome = Released(cmd.request_id, res.name, cmd.owner, hold.token)
        self._s.record(cmd.request_id, outcome)
        out.append(outcome)
        self._hand_over(index, res, out)
        self._forget_if_empty(res)

    def _renew(self, cmd: Renew, out: list[Outcome]) -> None:
        res = self._s.resources.get(cmd.resource)
        hold = None if res is None else res.holders.get(cmd.owner)
        outcome: Outcome
        if res is None or hold is None or hold.token != cmd.token:
            outcome = self._not_holder(cmd.request_id, cmd.resource, cmd.owner)
        else:
            expires_at_ms = self._s.clock_ms + cmd.ttl_ms
            res.holders[cmd.owner] = Hold(cmd.owner, hold.mode, hold.token, expires_at_ms)
            self._deadlines.push((expires_at_ms, LEASE, res.name, cmd.owner))
            outcome = Renewed(cmd.request_id, res.name, cmd.owner, hold.token, expires_at_ms)
        self._s.record(cmd.request_id, outcome)
        out.append(outcome)

    def _cancel(self, index: int, cmd: Cancel, out: list[Outcome]) -> None:
        """Withdraw a waiter; a request that is not waiting (any more) is left alone."""
        if cmd.request_id not in self._s.pending:
            return
        res, _ = self._remove_waiter(cmd.request_id)
        outcome = Cancelled(cmd.request_id, res.name)
        self._s.record(cmd.request_id, outcome)
        out.append(outcome)
        self._hand_over(index, res, out)
        self._forget_if_empty(res)

    @staticmethod
    def _not_holder(request_id: str, resource: str, owner: str) -> Refused:
        message = f"{owner!r} holds no live lease on {resource!r} with that token"
        return Refused(request_id, "not_holder", message)

    # ------------------------------------------------------------ grants and queues

    @staticmethod
    def _grantable_now(res: Resource, owner: str, mode: Mode) -> bool:
        """Whether a new request can skip the queue: only when nobody waits (fairness)."""
        if res.queue:
            return False
        if mode == EXCLUSIVE:
            return all(holder == owner for holder in res.holders)
        return not res.has_exclusive_holder()

    def _grant(
        self, index: int, res: Resource, request_id: str, owner: str, mode: Mode, ttl_ms: int
    ) -> Granted:
        """Give `owner` a lease with token `index`, replacing its shared hold on an upgrade."""
        require(
            index > res.last_token or index == res.last_token == self._s.last_index,
            f"token {index} for {res.name!r} does not exceed {res.last_token}",
        )
        expires_at_ms = self._s.clock_ms + ttl_ms
        res.holders[owner] = Hold(owner, mode, index, expires_at_ms)
        res.last_token = index
        self._deadlines.push((expires_at_ms, LEASE, res.name, owner))
        return Granted(request_id, res.name, owner, mode, index, expires_at_ms)

    def _enqueue(self, res: Resource, waiter: Waiter) -> Queued:
        res.queue.append(waiter)
        self._s.pending[waiter.request_id] = res.name
        self._s.waiting_on.setdefault(waiter.owner, set()).add(res.name)
        self._deadlines.push((waiter.deadline_ms, WAITER, res.name, waiter.request_id))
        return Queued(waiter.request_id, res.name, len(res.queue))

    def _remove_waiter(self, request_id: str) -> tuple[Resource, Waiter]:
        """Take a waiter out of its queue and of both indexes."""
        res = self._s.resources[self._s.pending.pop(request_id)]
        position = res.position_of(request_id)
        require(position > 0, f"pending request {request_id!r} is not queued")
        waiter = res.queue.pop(position - 1)
        names = self._s.waiting_on[waiter.owner]
        names.discard(res.name)
        if not names:
            del self._s.waiting_on[waiter.owner]
        return res, waiter

    def _grantable_batch(self, res: Resource) -> list[Waiter]:
        """The waiters at the head that can be granted now (possibly none)."""
        if not res.queue:
            return []
        head = res.queue[0]
        if head.mode == EXCLUSIVE:
            alone = all(holder == head.owner for holder in res.holders)
            return [head] if alone else []
        if res.has_exclusive_holder():
            return []
        batch: list[Waiter] = []
        for waiter in res.queue:
            if waiter.mode != SHARED:
                break
            batch.append(waiter)
        return batch

    def _hand_over(self, index: int, res: Resource, out: list[Outcome]) -> None:
        """Grant from the head of the queue for as long as the head is grantable."""
        while batch := self._grantable_batch(res):
            for waiter in batch:
                self._remove_waiter(waiter.request_id)
                granted = self._grant(
                    index, res, waiter.request_id, waiter.owner, waiter.mode, waiter.ttl_ms
                )
                self._s.record(waiter.request_id, granted)
                out.append(granted)

    def _forget_if_empty(self, res: Resource) -> None:
        """Drop an empty resource, keeping its last token in the floor (see state.py)."""
        if res.is_empty() and self._s.resources.get(res.name) is res:
            del self._s.resources[res.name]
            self._s.token_floor = max(self._s.token_floor, res.last_token)

    # ----------------------------------------------------------------- deadlocks

    def _deadlock_cycle(self, res: Resource, owner: str, mode: Mode) -> tuple[str, ...] | None:
        """The cycle `owner` would close by queuing on `res` at the tail, if any."""
        if not self._has_dependents(owner):
            return None
        targets = {holder for holder in res.holders if holder != owner}
        targets.update(w.owner for w in res.queue if conflicts(mode, w.mode))
        targets.discard(owner)
        return find_cycle(owner, sorted(targets), self._waits_for)

    def _has_dependents(self, owner: str) -> bool:
        """Whether anybody waits for `owner`; if nobody does, no cycle can pass through it.

        The common case (a client that holds nothing and waits nowhere else) then costs
        no graph search, which would be quadratic in the length of a busy queue.
        """
        for name in self._s.waiting_on.get(owner, ()):
            queue = self._s.resources[name].queue
            ahead = [w for w in queue if w.owner == owner]
            if ahead and queue.index(ahead[0]) < len(queue) - 1:
                return True
        return any(
            owner in res.holders and any(w.owner != owner for w in res.queue)
            for res in self._s.resources.values()
        )

    def _waits_for(self, owner: str) -> list[str]:
        """The owners `owner` waits for, over every resource it queues on, sorted."""
        targets: set[str] = set()
        for name in self._s.waiting_on.get(owner, ()):
            targets.update(invariants.waiter_edges(self._s.resources[name], owner))
        return sorted(targets)
