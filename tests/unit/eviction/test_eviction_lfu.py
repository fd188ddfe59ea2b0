"""LFU with ageing: frequency first, recency breaks ties, old popularity fades."""

from __future__ import annotations

import pytest

from distcluster_worker.coherence import MesiState
from distcluster_worker.eviction import LfuPolicy, Line, LineStore


def line() -> Line:
    return Line.of("v", MesiState.S, 1)


def test_evicts_least_frequently_used() -> None:
    store = LineStore(3, "lfu", lfu_decay_every=1000)
    for key in "abc":
        store.put(key, line())
    store.get("a")
    store.get("a")
    store.get("c")
    assert [k for k, _ in store.put("d", line())] == ["b"]


def test_ties_broken_by_recency() -> None:
    store = LineStore(3, "lfu", lfu_decay_every=1000)
    for key in "abc":
        store.put(key, line())
    store.get("a")
    store.get("b")  # a and b both count 2; a is older
    store.get("c")
    assert store.keys() == ["a", "b", "c"]
    assert [k for k, _ in store.put("d", line())] == ["a"]


def test_new_key_is_not_evicted_by_its_own_insertion() -> None:
    store = LineStore(2, "lfu", lfu_decay_every=1000)
    store.put("a", line())
    store.put("b", line())
    for _ in range(5):
        store.get("a")
        store.get("b")
    evicted = store.put("c", line())
    assert [k for k, _ in evicted] == ["a"]
    assert "c" in store


def test_ageing_makes_an_old_hot_key_evictable() -> None:
    store = LineStore(2, "lfu", lfu_decay_every=8)
    store.put("old", line())
    for _ in range(6):
        store.get("old")  # count 7, then halved at the 8th access
    store.put("new", line())
    for _ in range(40):  # "old" is never touched again; decay runs 5 more times
        store.get("new")
    assert store.keys()[0] == "old"
    assert [k for k, _ in store.put("x", line())] == ["old"]
    assert store.stats.decays >= 5


def test_without_ageing_the_old_hot_key_would_survive() -> None:
    store = LineStore(2, "lfu", lfu_decay_every=10**9)
    store.put("old", line())
    for _ in range(30):
        store.get("old")
    store.put("new", line())
    for _ in range(20):
        store.get("new")
    assert [k for k, _ in store.put("x", line())] == ["new"]


def test_explicit_decay_halves_counts_and_keeps_at_least_one() -> None:
    policy = LfuPolicy(decay_every=1000)
    policy.insert("a")
    policy.insert("b")
    for _ in range(5):
        policy.touch("a")
    policy.decay()
    assert (policy.count("a"), policy.count("b")) == (3, 1)
    policy.decay()
    policy.decay()
    assert (policy.count("a"), policy.count("b")) == (1, 1)
    assert policy.order() == ["b", "a"]  # equal counts: least recent first


def test_lfu_capacity_one() -> None:
    store = LineStore(1, "lfu")
    store.put("a", line())
    store.get("a")
    assert [k for k, _ in store.put("b", line())] == ["a"]
    assert store.keys() == ["b"]


def test_bad_decay() -> None:
    with pytest.raises(ValueError):
        LineStore(1, "lfu", lfu_decay_every=0)
