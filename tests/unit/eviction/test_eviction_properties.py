"""Random operations: budgets always hold, and the store matches a naive reference.

The reference keeps everything in plain lists and dicts and picks victims by a linear scan
(LRU: least recent; LFU: lowest count, then least recent, counts halved every N accesses),
so it is obviously right and slow. Both must evict the same keys in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from distcluster_worker.coherence import MesiState
from distcluster_worker.eviction import Line, LineStore, LineTooLargeError

KEYS = st.sampled_from([f"k{i}" for i in range(8)])
VALUES = st.text(alphabet="abé", max_size=6)
STATES = st.sampled_from(list(MesiState))
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, VALUES, STATES),
        st.tuples(st.just("get"), KEYS),
        st.tuples(st.just("remove"), KEYS),
        st.tuples(st.just("peek"), KEYS),
    ),
    max_size=80,
)


@dataclass
class Reference:
    capacity: int
    max_bytes: int | None
    policy: str
    decay_every: int
    lines: dict[str, Line] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)
    clock: int = 0
    accesses: int = 0

    def access(self, key: str, fresh: bool) -> None:
        self.clock += 1
        self.last[key] = self.clock
        self.count[key] = 1 if fresh else self.count[key] + 1
        self.accesses += 1
        if self.policy == "lfu" and self.accesses % self.decay_every == 0:
            self.count = {k: max(1, c // 2) for k, c in self.count.items()}

    def rank(self, key: str) -> tuple[int, int]:
        return (self.count[key], self.last[key]) if self.policy == "lfu" else (0, self.last[key])

    def get(self, key: str) -> Line | None:
        if key in self.lines:
            self.access(key, fresh=False)
        return self.lines.get(key)

    def over(self) -> bool:
        used = sum(line.size_bytes for line in self.lines.values())
        return len(self.lines) > self.capacity or (
            self.max_bytes is not None and used > self.max_bytes
        )

    def put(self, key: str, line: Line) -> list[tuple[str, Line]]:
        self.access(key, fresh=key not in self.lines)
        self.lines[key] = line
        evicted = []
        while self.over():
            victim = min((k for k in self.lines if k != key), key=self.rank)
            evicted.append((victim, self.lines.pop(victim)))
            del self.count[victim], self.last[victim]
        return evicted

    def remove(self, key: str) -> Line | None:
        self.count.pop(key, None)
        self.last.pop(key, None)
        return self.lines.pop(key, None)


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(1, 5),
    max_bytes=st.none() | st.integers(1, 12),
    policy=st.sampled_from(["lru", "lfu"]),
    decay_every=st.integers(1, 6),
    ops=OPS,
)
def test_store_matches_reference_and_keeps_budgets(
    capacity: int, max_bytes: int | None, policy: str, decay_every: int, ops: list[tuple]
) -> None:
    store = LineStore(capacity, policy, max_bytes=max_bytes, lfu_decay_every=decay_every)  # type: ignore[arg-type]
    ref = Reference(capacity, max_bytes, policy, decay_every)
    for op in ops:
        if op[0] == "put":
            line = Line.of(op[2], op[3], 1)
            if max_bytes is not None and line.size_bytes > max_bytes:
                try:
                    store.put(op[1], line)
                except LineTooLargeError:
                    continue
                raise AssertionError("an oversized line was accepted")
            assert store.put(op[1], line) == ref.put(op[1], line)
        elif op[0] == "get":
            assert store.get(op[1]) == ref.get(op[1])
        elif op[0] == "remove":
            assert store.remove(op[1]) == ref.remove(op[1])
        else:
            assert store.peek(op[1]) == ref.lines.get(op[1])
        store.check_invariants()
        assert len(store) <= capacity
        assert max_bytes is None or store.bytes_used <= max_bytes
        assert sorted(store.keys()) == sorted(ref.lines)
        assert store.keys() == sorted(ref.lines, key=ref.rank)
