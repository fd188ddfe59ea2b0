"""Deadlock refusal on the wait-for graph, and the pure cycle finder behind it."""

from __future__ import annotations

from lock_driver import Driver

from distcluster_worker.locks import Outcome, Queued, Refused
from distcluster_worker.locks.waitgraph import find_any_cycle, find_cycle


def _deadlock(outcomes: list[Outcome]) -> tuple[str, ...]:
    [refused] = outcomes
    assert isinstance(refused, Refused) and refused.code == "deadlock"
    return refused.cycle


def test_two_owner_cycle_is_refused_and_not_queued(d: Driver) -> None:
    d.acquire("r1", "a")
    d.acquire("r2", "b")
    assert d.acquire("r2", "a", wait_ms=5_000, request_id="a2") == [Queued("a2", "r2", 1)]
    assert _deadlock(d.acquire("r1", "b", wait_ms=5_000)) == ("b", "a", "b")
    assert d.table.view("r1")["waiters"] == []


def test_three_owner_cycle_reports_the_owners_in_order(d: Driver) -> None:
    d.acquire("r1", "a")
    d.acquire("r2", "b")
    d.acquire("r3", "c")
    d.acquire("r2", "a", wait_ms=5_000)
    d.acquire("r3", "b", wait_ms=5_000)
    assert _deadlock(d.acquire("r1", "c", wait_ms=5_000)) == ("c", "a", "b", "c")


def test_a_conflicting_waiter_ahead_is_an_edge(d: Driver) -> None:
    # c waits on r1 behind b; b then waiting for c's r2 closes b -> c -> b.
    d.acquire("r1", "a")
    d.acquire("r2", "c")
    d.acquire("r1", "b", wait_ms=5_000)
    d.acquire("r1", "c", wait_ms=5_000)
    assert _deadlock(d.acquire("r2", "b", wait_ms=5_000)) == ("b", "c", "b")


def test_shared_waiters_ahead_are_no_edge_for_a_shared_request(d: Driver) -> None:
    # b (shared) waits on r1 behind writer w, and b also waits for z's r2. z queuing shared
    # on r1 waits for a and w, not for b (shared after shared), so no cycle b -> z -> b.
    d.acquire("r1", "a")
    d.acquire("r1", "w", wait_ms=5_000)
    d.acquire("r1", "b", "shared", wait_ms=5_000)
    d.acquire("r2", "z")
    d.acquire("r2", "b", wait_ms=5_000)
    [queued] = d.acquire("r1", "z", "shared", wait_ms=5_000, request_id="z1")
    assert queued == Queued("z1", "r1", 3)
    # An exclusive request from z would wait for b too, closing z -> b -> z.
    d.cancel("z1")
    assert _deadlock(d.acquire("r1", "z", wait_ms=5_000)) == ("z", "b", "z")


def test_no_deadlock_when_waiting_does_not_close_a_cycle(d: Driver) -> None:
    d.acquire("r1", "a")
    d.acquire("r2", "b")
    d.acquire("r2", "a", wait_ms=5_000)
    [queued] = d.acquire("r1", "c", wait_ms=5_000)
    assert isinstance(queued, Queued)


def test_refused_deadlock_is_replayed_on_retry(d: Driver) -> None:
    d.acquire("r1", "a")
    d.acquire("r2", "b")
    d.acquire("r2", "a", wait_ms=5_000)
    first = d.acquire("r1", "b", wait_ms=5_000, request_id="dl")
    d.release("r1", "a", 1)
    assert d.acquire("r1", "b", wait_ms=5_000, request_id="dl") == first


def test_find_cycle_prefers_the_shortest_then_the_given_order() -> None:
    graph = {"b": ["c"], "c": ["s"], "d": ["s"], "e": ["s"]}
    assert find_cycle("s", ["b", "d", "e"], lambda n: graph.get(n, [])) == ("s", "d", "s")
    assert find_cycle("s", ["e", "d"], lambda n: graph.get(n, [])) == ("s", "e", "s")
    assert find_cycle("s", ["b"], lambda n: graph.get(n, [])) == ("s", "b", "c", "s")
    assert find_cycle("s", ["x"], lambda n: graph.get(n, [])) is None
    assert find_cycle("s", ["s"], lambda n: []) == ("s", "s")


def test_find_any_cycle() -> None:
    dag = {"a": ["b"], "b": ["c"]}
    assert find_any_cycle(dag, lambda n: dag.get(n, [])) is None
    loop = {"a": ["b"], "b": ["c"], "c": ["b"]}
    assert find_any_cycle(loop, lambda n: loop.get(n, [])) == ("b", "c", "b")
