"""The data of the lock table, with no behaviour beyond keeping its indexes in step.

`TableState` is everything a snapshot must carry. Besides the resources it keeps:

* `pending` (request id -> resource) and `waiting_on` (owner -> resources): indexes over
  the queues, for retries, cancels and the wait-for graph. They are derived, so snapshots
  omit them and `rebuild_indexes` recomputes them.
* `token_floor`: fencing tokens must increase per resource even across the resource being
  forgotten when it empties. Keeping every resource's last token forever would grow without
  bound, so an emptied resource folds its last token into this one number, and a resource
  that reappears starts from it. Tokens are Raft indexes, so the floor never exceeds
  `last_index` and any later grant is above it.
* `dedup`: request id -> final outcome, oldest first, capped at `dedup_capacity`. An
  `OrderedDict`, because every command drops the oldest once the map is full: a plain
  dict finds its first live key by skipping the slots of the keys deleted before it,
  which made each eviction cost about ten times more than the rest of `record`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from distcluster_worker.locks.outcomes import EXCLUSIVE, Mode, Outcome


@dataclass(frozen=True, slots=True)
class Hold:
    """One owner's lease on a resource."""

    owner: str
    mode: Mode
    token: int
    expires_at_ms: int


@dataclass(frozen=True, slots=True)
class Waiter:
    """A queued acquire; `ttl_ms` is kept to set the lease once it is granted."""

    request_id: str
    owner: str
    mode: Mode
    ttl_ms: int
    deadline_ms: int


@dataclass(slots=True)
class Resource:
    """Holders by owner, and the FIFO queue of waiters (head first)."""

    name: str
    last_token: int
    holders: dict[str, Hold] = field(default_factory=dict)
    queue: list[Waiter] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.holders and not self.queue

    def position_of(self, request_id: str) -> int:
        """1-based queue position of a waiter (0 if absent)."""
        for i, waiter in enumerate(self.queue):
            if waiter.request_id == request_id:
                return i + 1
        return 0

    def has_exclusive_holder(self) -> bool:
        return any(hold.mode == EXCLUSIVE for hold in self.holders.values())


def conflicts(a: Mode, b: Mode) -> bool:
    """Two modes conflict unless both are shared."""
    return a == EXCLUSIVE or b == EXCLUSIVE


@dataclass(slots=True)
class TableState:
    dedup_capacity: int
    clock_ms: int = 0
    last_index: int = 0
    token_floor: int = 0
    resources: dict[str, Resource] = field(default_factory=dict)
    dedup: OrderedDict[str, Outcome] = field(default_factory=OrderedDict)
    pending: dict[str, str] = field(default_factory=dict)
    waiting_on: dict[str, set[str]] = field(default_factory=dict)

    def rebuild_indexes(self) -> None:
        """Recompute `pending` and `waiting_on` from the queues (after a restore)."""
        self.pending = {}
        self.waiting_on = {}
        for name in sorted(self.resources):
            for waiter in self.resources[name].queue:
                self.pending[waiter.request_id] = name
                self.waiting_on.setdefault(waiter.owner, set()).add(name)

    def record(self, request_id: str, outcome: Outcome) -> None:
        """Remember a final outcome for retries, dropping the oldest beyond capacity."""
        if self.dedup_capacity == 0:
            return
        dedup = self.dedup
        if request_id in dedup:
            dedup.move_to_end(request_id)
        dedup[request_id] = outcome
        while len(dedup) > self.dedup_capacity:
            dedup.popitem(last=False)
