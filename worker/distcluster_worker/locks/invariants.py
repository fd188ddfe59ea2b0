"""The rules a lock table must satisfy after every applied entry, checked on demand.

`check` is what the simulator and the property tests call after each step; it raises
`LockInvariantError` through `require`, never via `assert`. The rules:

* Modes: an exclusive holder is the only holder of its resource.
* Fencing: every holder's token is at most the resource's `last_token`, which is at most
  the last applied index; the floor of forgotten resources is too. With grants only at
  the current index (checked in `LockTable._grant`) tokens strictly increase per resource.
* Time: nothing live is due (leases end and deadlines fall strictly after the clock), and
  every live lease and waiter has an entry in the deadline heap.
* Queues are stable: the head cannot be granted now (else the hand-over was missed), each
  owner waits at most once per resource, and only an upgrading shared holder waits on a
  resource it already holds.
* Indexes (`pending`, `waiting_on`) equal what the queues imply; no request is both
  pending and finished; the dedup map respects its capacity.
* The wait-for graph has no cycle (a request that would close one is refused).
"""

from __future__ import annotations

from collections.abc import Iterable

from distcluster_worker.locks.deadlines import Deadline
from distcluster_worker.locks.errors import require
from distcluster_worker.locks.outcomes import EXCLUSIVE, SHARED
from distcluster_worker.locks.state import Resource, TableState, conflicts
from distcluster_worker.locks.waitgraph import find_any_cycle


def waiter_edges(res: Resource, owner: str) -> set[str]:
    """Whom `owner`'s waiter on `res` waits for: other holders, conflicting waiters ahead."""
    for i, waiter in enumerate(res.queue):
        if waiter.owner == owner:
            ahead = res.queue[:i]
            edges = set(res.holders)
            edges.update(w.owner for w in ahead if conflicts(waiter.mode, w.mode))
            edges.discard(owner)
            return edges
    return set()


def check(state: TableState, heap: frozenset[Deadline], live: Iterable[Deadline]) -> None:
    """Raise LockInvariantError if `state` (with its deadline heap) breaks any rule."""
    require(state.clock_ms >= 0 and state.last_index >= 0, "clock and index are non-negative")
    require(state.token_floor <= state.last_index, "token floor is above the last index")
    require(len(state.dedup) <= state.dedup_capacity, "dedup map exceeds its capacity")
    for name in sorted(state.resources):
        res = state.resources[name]
        require(res.name == name, f"resource {name!r} is filed under another name")
        require(not res.is_empty(), f"empty resource {name!r} is kept")
        _check_holders(state, res)
        _check_queue(state, res)
    _check_indexes(state)
    missing = sorted(set(live) - heap)
    require(not missing, f"live deadlines missing from the heap: {missing[:3]}")
    owners = sorted(state.waiting_on)
    cycle = find_any_cycle(owners, lambda o: _successors(state, o))
    require(cycle is None, f"wait-for graph has a cycle: {cycle}")


def _check_holders(state: TableState, res: Resource) -> None:
    require(res.last_token <= state.last_index, f"{res.name!r}: last token above last index")
    for owner, hold in res.holders.items():
        require(hold.owner == owner, f"{res.name!r}: holder filed under another owner")
        require(0 < hold.token <= res.last_token, f"{res.name!r}: token above last token")
        require(hold.expires_at_ms > state.clock_ms, f"{res.name!r}: expired lease kept")
    if res.has_exclusive_holder():
        require(len(res.holders) == 1, f"{res.name!r}: exclusive holder beside another holder")


def _check_queue(state: TableState, res: Resource) -> None:
    owners = [w.owner for w in res.queue]
    require(len(set(owners)) == len(owners), f"{res.name!r}: an owner waits twice")
    for waiter in res.queue:
        require(waiter.deadline_ms > state.clock_ms, f"{res.name!r}: overdue waiter kept")
        require(waiter.ttl_ms > 0, f"{res.name!r}: waiter without a lease length")
        require(
            waiter.request_id not in state.dedup, f"{waiter.request_id!r}: both done and waiting"
        )
        hold = res.holders.get(waiter.owner)
        upgrading = hold is not None and hold.mode == SHARED and waiter.mode == EXCLUSIVE
        require(hold is None or upgrading, f"{res.name!r}: holder {waiter.owner!r} also waits")
    if res.queue:
        head = res.queue[0]
        if head.mode == EXCLUSIVE:
            grantable = all(owner == head.owner for owner in res.holders)
        else:
            grantable = not res.has_exclusive_holder()
        require(not grantable, f"{res.name!r}: queue head {head.request_id!r} is grantable")


def _check_indexes(state: TableState) -> None:
    pending: dict[str, str] = {}
    waiting_on: dict[str, set[str]] = {}
    for name, res in state.resources.items():
        for waiter in res.queue:
            require(waiter.request_id not in pending, f"request {waiter.request_id!r} waits twice")
            pending[waiter.request_id] = name
            waiting_on.setdefault(waiter.owner, set()).add(name)
    require(pending == state.pending, "pending index differs from the queues")
    require(waiting_on == state.waiting_on, "waiting_on index differs from the queues")


def _successors(state: TableState, owner: str) -> list[str]:
    targets: set[str] = set()
    for name in state.waiting_on.get(owner, ()):
        targets.update(waiter_edges(state.resources[name], owner))
    return sorted(targets)
