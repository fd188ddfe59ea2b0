"""`LineStore`: a node's cache lines under a line capacity and an optional byte budget.

The store decides only what to drop; coherence is the caller's business, with one duty
made explicit: an evicted line in M is returned with its state, so the shell writes it back
(and tells the home) before the line is forgotten. Evicting a line in E or S is always
safe for coherence: memory holds the same value, and the home at worst sends an
invalidation to a node that no longer has the line.

Guarantees, checked after every mutation through `require`: never more than `capacity`
lines, never more than `max_bytes` bytes of values. `put` evicts until both hold and never
evicts the line it is inserting; a line larger than the whole budget is refused
(`LineTooLargeError`) and the store is left unchanged.

`get` counts as an access (hit or miss statistics, recency, frequency); `peek`,
`set_state` and `remove` do not, because the shell uses them for protocol traffic (a
peer's bus_read, an invalidation), which says nothing about local popularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from distcluster_worker.coherence.states import MesiState
from distcluster_worker.eviction.errors import EvictionInvariantError, LineTooLargeError, require
from distcluster_worker.eviction.line import Line
from distcluster_worker.eviction.policies import LfuPolicy, LruPolicy, Policy

PolicyName = Literal["lru", "lfu"]
DEFAULT_LFU_DECAY_EVERY = 1024


@dataclass(frozen=True, slots=True)
class StoreStats:
    hits: int
    misses: int
    inserts: int
    updates: int
    evictions: int
    dirty_evictions: int
    removals: int
    decays: int
    lines: int
    bytes_used: int

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass(slots=True)
class _Counters:
    hits: int = 0
    misses: int = 0
    inserts: int = 0
    updates: int = 0
    evictions: int = 0
    dirty_evictions: int = 0
    removals: int = 0


def make_policy(name: PolicyName, lfu_decay_every: int) -> Policy:
    if name == "lru":
        return LruPolicy()
    if name == "lfu":
        return LfuPolicy(lfu_decay_every)
    raise ValueError(f"unknown eviction policy {name!r} (expected 'lru' or 'lfu')")


class LineStore:
    def __init__(
        self,
        capacity: int,
        policy: PolicyName,
        *,
        max_bytes: int | None = None,
        lfu_decay_every: int = DEFAULT_LFU_DECAY_EVERY,
    ) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError("max_bytes must be positive when given")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.policy_name: PolicyName = policy
        self._policy = make_policy(policy, lfu_decay_every)
        self._lines: dict[str, Line] = {}
        self._bytes = 0
        self._counters = _Counters()

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, key: object) -> bool:
        return key in self._lines

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def keys(self) -> list[str]:
        """The keys in eviction order: the next victim first."""
        return self._policy.order()

    def get(self, key: str) -> Line | None:
        line = self._lines.get(key)
        if line is None:
            self._counters.misses += 1
            return None
        self._counters.hits += 1
        self._policy.touch(key)
        return line

    def peek(self, key: str) -> Line | None:
        return self._lines.get(key)

    def put(self, key: str, line: Line) -> list[tuple[str, Line]]:
        """Store `line` under `key` (an access); returns the lines evicted to make room."""
        if self.max_bytes is not None and line.size_bytes > self.max_bytes:
            raise LineTooLargeError(f"{line.size_bytes} bytes exceed the {self.max_bytes} budget")
        old = self._lines.get(key)
        if old is None:
            self._counters.inserts += 1
            self._policy.insert(key)
        else:
            self._counters.updates += 1
            self._bytes -= old.size_bytes
            self._policy.touch(key)
        self._lines[key] = line
        self._bytes += line.size_bytes
        evicted = self._make_room(key)
        self._check_budget()
        return evicted

    def set_state(self, key: str, state: MesiState) -> Line | None:
        """Change a line's state without counting an access; None if the key is absent."""
        line = self._lines.get(key)
        if line is None:
            return None
        line = line.with_state(state)
        self._lines[key] = line
        return line

    def remove(self, key: str) -> Line | None:
        line = self._lines.pop(key, None)
        if line is not None:
            self._counters.removals += 1
            self._bytes -= line.size_bytes
            self._policy.remove(key)
        return line

    def decay(self) -> None:
        """Age LFU counts now (for a logical-time schedule); LRU ignores it."""
        self._policy.decay()

    @property
    def stats(self) -> StoreStats:
        c = self._counters
        decays = self._policy.decays if isinstance(self._policy, LfuPolicy) else 0
        return StoreStats(
            c.hits,
            c.misses,
            c.inserts,
            c.updates,
            c.evictions,
            c.dirty_evictions,
            c.removals,
            decays,
            len(self._lines),
            self._bytes,
        )

    def lines_per_state(self) -> dict[MesiState, int]:
        counts = dict.fromkeys(MesiState, 0)
        for line in self._lines.values():
            counts[line.state] += 1
        return counts

    def check_invariants(self) -> None:
        """The full check, O(n): indexes agree and the budgets hold."""
        order = self._policy.order()
        require(sorted(order) == sorted(self._lines), "policy and lines disagree on the keys")
        require(len(order) == len(set(order)), "a key appears twice in the eviction order")
        total = sum(line.size_bytes for line in self._lines.values())
        require(total == self._bytes, f"bytes_used {self._bytes} but lines hold {total}")
        self._check_budget()

    def _over_budget(self) -> bool:
        if len(self._lines) > self.capacity:
            return True
        return self.max_bytes is not None and self._bytes > self.max_bytes

    def _make_room(self, keep: str) -> list[tuple[str, Line]]:
        evicted: list[tuple[str, Line]] = []
        while self._over_budget():
            victim = self._policy.victim(keep)
            if victim is None:
                raise EvictionInvariantError("over budget with nothing left to evict")
            line = self._lines.pop(victim)
            self._policy.remove(victim)
            self._bytes -= line.size_bytes
            self._counters.evictions += 1
            self._counters.dirty_evictions += int(line.dirty)
            evicted.append((victim, line))
        return evicted

    def _check_budget(self) -> None:
        require(len(self._lines) <= self.capacity, "more lines than the capacity")
        budget = self.max_bytes
        require(budget is None or self._bytes <= budget, "more bytes than the budget")
        require(self._bytes >= 0, "negative bytes_used")
