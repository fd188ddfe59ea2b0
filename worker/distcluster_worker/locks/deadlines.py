"""A min-heap of lease expiries and waiter deadlines, with lazy deletion.

Renewals, releases and grants would otherwise need a search-and-remove in the heap; instead
an entry is left in place and checked against the table when it surfaces (`is_current`).
Entries are plain tuples ordered by (time, kind, resource, id), a total order, so the order
in which due events are handled depends only on the table's state, never on the history of
pushes: a table restored from a snapshot (which rebuilds this heap) behaves identically.

Leases (kind 0) sort before waiters (kind 1) at the same instant: a lease that ends exactly
when a waiter's patience does hands the lock to that waiter rather than refusing it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

LEASE = 0
WAITER = 1

# (time_ms, kind, resource, owner for a lease or request id for a waiter)
Deadline = tuple[int, int, str, str]
IsCurrent = Callable[[Deadline], bool]


class DeadlineHeap:
    def __init__(self) -> None:
        self._heap: list[Deadline] = []

    def __len__(self) -> int:
        return len(self._heap)

    def entries(self) -> frozenset[Deadline]:
        return frozenset(self._heap)

    def push(self, entry: Deadline) -> None:
        heapq.heappush(self._heap, entry)

    def replace_all(self, entries: list[Deadline]) -> None:
        """Drop stale entries in one go (called when they outnumber the live ones)."""
        self._heap = sorted(set(entries))

    def pop_due(self, clock_ms: int, is_current: IsCurrent) -> Deadline | None:
        """The earliest current entry with time <= clock_ms, removed; stale ones are dropped."""
        while self._heap and self._heap[0][0] <= clock_ms:
            entry = heapq.heappop(self._heap)
            if is_current(entry):
                return entry
        return None

    def earliest(self, is_current: IsCurrent) -> int | None:
        """The time of the earliest current entry, dropping stale entries on the way."""
        while self._heap and not is_current(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None
