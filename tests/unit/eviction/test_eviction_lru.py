"""LRU and store basics: recency order, byte budget, capacity 1, dirty lines reported."""

from __future__ import annotations

import pytest

from distcluster_worker.coherence import MesiState
from distcluster_worker.eviction import Line, LineStore, LineTooLargeError

S, M = MesiState.S, MesiState.M


def line(value: str = "v", state: MesiState = S, version: int = 1) -> Line:
    return Line.of(value, state, version)


def test_evicts_least_recently_used() -> None:
    store = LineStore(3, "lru")
    for key in "abc":
        assert store.put(key, line()) == []
    assert store.get("a") is not None  # a becomes most recent
    evicted = store.put("d", line())
    assert [k for k, _ in evicted] == ["b"]
    assert store.keys() == ["c", "a", "d"]


def test_peek_and_set_state_do_not_touch() -> None:
    store = LineStore(2, "lru")
    store.put("a", line())
    store.put("b", line())
    assert store.peek("a") is not None
    assert store.set_state("a", MesiState.E) is not None
    assert [k for k, _ in store.put("c", line())] == ["a"]
    assert store.stats.hits == 0


def test_update_replaces_and_touches() -> None:
    store = LineStore(2, "lru")
    store.put("a", line("1"))
    store.put("b", line())
    store.put("a", line("22", version=2))
    assert store.peek("a") == Line.of("22", S, 2)
    assert [k for k, _ in store.put("c", line())] == ["b"]
    assert store.stats.updates == 1


def test_capacity_one_keeps_only_the_newest() -> None:
    store = LineStore(1, "lru")
    store.put("a", line())
    assert [k for k, _ in store.put("b", line())] == ["a"]
    assert store.keys() == ["b"] and len(store) == 1


def test_byte_budget_evicts_until_it_fits() -> None:
    store = LineStore(10, "lru", max_bytes=10)
    store.put("a", line("xxxx"))
    store.put("b", line("yyyy"))
    evicted = store.put("c", line("zzzzzzzz"))
    assert [k for k, _ in evicted] == ["a", "b"]
    assert store.bytes_used == 8


def test_line_larger_than_budget_is_refused_and_store_unchanged() -> None:
    store = LineStore(10, "lru", max_bytes=4)
    store.put("a", line("xx"))
    with pytest.raises(LineTooLargeError):
        store.put("b", line("xxxxx"))
    assert store.keys() == ["a"] and store.bytes_used == 2


def test_size_counts_utf8_bytes() -> None:
    assert Line.of("é", S, 1).size_bytes == 2


def test_dirty_line_is_reported_with_its_state() -> None:
    store = LineStore(1, "lru")
    store.put("a", line("new", M, 7))
    evicted = store.put("b", line())
    assert evicted == [("a", Line.of("new", M, 7))]
    assert evicted[0][1].dirty
    assert store.stats.dirty_evictions == 1


def test_stats_and_remove() -> None:
    store = LineStore(4, "lru")
    store.put("a", line("abc"))
    assert store.get("a") is not None
    assert store.get("zz") is None
    assert store.remove("a") == line("abc")
    assert store.remove("a") is None
    stats = store.stats
    assert (stats.hits, stats.misses, stats.removals, stats.lines) == (1, 1, 1, 0)
    assert stats.hit_ratio == 0.5 and store.bytes_used == 0
    assert store.lines_per_state()[S] == 0
    store.check_invariants()


@pytest.mark.parametrize("capacity", [0, -1])
def test_bad_capacity(capacity: int) -> None:
    with pytest.raises(ValueError):
        LineStore(capacity, "lru")


def test_bad_policy_and_budget() -> None:
    with pytest.raises(ValueError):
        LineStore(1, "fifo")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LineStore(1, "lru", max_bytes=0)
