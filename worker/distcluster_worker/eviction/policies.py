"""Eviction policies: which key to drop next. Both are O(1) per access, amortised.

LRU keeps keys in an OrderedDict, least recent first; a touch moves a key to the end.

LFU keeps one OrderedDict per access count ("bucket"), least recent first inside each, so
the victim is the oldest key of the lowest non-empty bucket: fewest accesses, ties broken
by recency. That order depends only on the sequence of calls, so eviction is deterministic.
Plain LFU never forgets: a key read a million times last week outlives today's working set
forever. Ageing fixes it: every `decay_every` accesses (or when the owner calls `decay`, for
example on a logical-time schedule) every count is halved (never below 1), so popularity
decays geometrically and an old hot key becomes evictable once it stops being used.
Halving rebuilds the buckets in O(n log n), which every `decay_every >= n` accesses is O(1)
amortised; recency order is kept through a logical touch counter.

A policy tracks keys only; the store owns the lines. `victim(exclude)` skips the key being
inserted, so a fresh key is never evicted by its own insertion (LFU would otherwise pick it,
as its count is the lowest).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from distcluster_worker.eviction.errors import require


class Policy(Protocol):
    name: str

    def insert(self, key: str) -> None: ...
    def touch(self, key: str) -> None: ...
    def remove(self, key: str) -> None: ...
    def victim(self, exclude: str | None) -> str | None: ...
    def order(self) -> list[str]: ...
    def decay(self) -> None: ...


class LruPolicy:
    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[str, None] = OrderedDict()

    def insert(self, key: str) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    def touch(self, key: str) -> None:
        self._order.move_to_end(key)

    def remove(self, key: str) -> None:
        del self._order[key]

    def victim(self, exclude: str | None) -> str | None:
        for key in self._order:
            if key != exclude:
                return key
        return None

    def order(self) -> list[str]:
        return list(self._order)

    def decay(self) -> None:
        """Recency needs no ageing."""


class LfuPolicy:
    name = "lfu"

    def __init__(self, decay_every: int) -> None:
        if decay_every <= 0:
            raise ValueError("decay_every must be positive")
        self.decay_every = decay_every
        self.decays = 0
        self._count: dict[str, int] = {}
        self._last: dict[str, int] = {}
        self._buckets: dict[int, OrderedDict[str, None]] = {}
        self._clock = 0
        self._since_decay = 0

    def count(self, key: str) -> int:
        return self._count[key]

    def insert(self, key: str) -> None:
        require(key not in self._count, f"{key!r} inserted twice")
        self._place(key, 1)
        self._accessed()

    def touch(self, key: str) -> None:
        self._unplace(key)
        self._place(key, self._count[key] + 1)
        self._accessed()

    def remove(self, key: str) -> None:
        self._unplace(key)
        del self._count[key]
        del self._last[key]

    def victim(self, exclude: str | None) -> str | None:
        for count in sorted(self._buckets):
            for key in self._buckets[count]:
                if key != exclude:
                    return key
        return None

    def order(self) -> list[str]:
        return [key for count in sorted(self._buckets) for key in self._buckets[count]]

    def decay(self) -> None:
        """Halve every count (never below 1), keeping recency order within each count."""
        self.decays += 1
        self._since_decay = 0
        ranked = sorted(self._count, key=lambda k: self._last[k])
        self._buckets.clear()
        for key in ranked:
            count = max(1, self._count[key] // 2)
            self._count[key] = count
            self._buckets.setdefault(count, OrderedDict())[key] = None

    def _place(self, key: str, count: int) -> None:
        self._clock += 1
        self._count[key] = count
        self._last[key] = self._clock
        self._buckets.setdefault(count, OrderedDict())[key] = None

    def _unplace(self, key: str) -> None:
        count = self._count[key]
        bucket = self._buckets[count]
        del bucket[key]
        if not bucket:
            del self._buckets[count]

    def _accessed(self) -> None:
        self._since_decay += 1
        if self._since_decay >= self.decay_every:
            self.decay()
