"""The slot table: which slots a round asks for, and what the answers make this node hold.

Two tables over one in-memory Redis (`InMemorySlots`, the twin of the Lua script)
show the property the whole design rests on: whatever each node's view wants, at no moment
do two nodes both act as home of one slot, and a new holder grants nothing until the old
holder's last copies ran out.
"""

from __future__ import annotations

import random

import pytest

from distcluster_worker.coherence import (
    SLOTS,
    Answer,
    CoherenceInvariantError,
    InMemorySlots,
    Outcome,
    Round,
    SlotTable,
    slot_name,
    slot_of,
    wanted_slots,
)

LEASE, COPY = 3000, 2000  # the slot lease and the copy lease, in ms
HOLD = LEASE - LEASE // 10


def table(node: str = "a") -> SlotTable:
    return SlotTable(node, lease_ms=LEASE, copy_lease_ms=COPY)


def round_trip(t: SlotTable, redis: InMemorySlots, wanted: set[int], sent: int, got: int) -> None:
    r = t.plan(wanted, sent)
    t.answered(r, redis.run(t.node_id, r, sent + (got - sent) // 2), got)


def test_slot_of_and_names_cover_every_slot() -> None:
    assert {slot_of(p) for p in range(10 * SLOTS)} == set(range(SLOTS))
    assert slot_name(7) == "slot-7"
    owners = ["a", "b", "c"]
    found = [wanted_slots(lambda name: owners[hash(name) % 3], n) for n in owners]
    assert set().union(*found) == set(range(SLOTS))
    assert sum(len(f) for f in found) == SLOTS


def test_acquisition_holds_until_send_plus_lease_minus_margin_and_grants_a_copy_lease_later() -> (
    None
):
    t, redis = table(), InMemorySlots(LEASE)
    round_trip(t, redis, {5}, sent=1000, got=1040)
    assert t.tenure(5) == 1
    assert t.holds(5, 1000 + HOLD - 1) and not t.holds(5, 1000 + HOLD)
    assert t.grants_from(5) == 1040 + COPY  # from the answer, not from the send
    assert t.holder(5, 1100) == "a" and t.held(1100) == [5]


def test_renewal_extends_from_its_own_send_and_keeps_tenure_and_grace() -> None:
    t, redis = table(), InMemorySlots(LEASE)
    round_trip(t, redis, {5}, sent=0, got=10)
    round_trip(t, redis, {5}, sent=700, got=710)
    assert t.tenure(5) == 1 and t.grants_from(5) == 10 + COPY
    assert t.holds(5, 700 + HOLD - 1) and not t.holds(5, 700 + HOLD)


def test_a_slot_held_by_another_node_is_not_held_and_names_its_holder() -> None:
    a, b, redis = table("a"), table("b"), InMemorySlots(LEASE)
    round_trip(a, redis, {5}, sent=0, got=10)
    round_trip(b, redis, {5}, sent=20, got=30)
    assert not b.holds(5, 30) and b.holder(5, 30) == "a" and b.tenure(5) is None
    assert b.grants_from(5) > 1 << 40


def test_a_released_slot_stops_counting_at_once_and_frees_the_slot() -> None:
    a, b, redis = table("a"), table("b"), InMemorySlots(LEASE)
    round_trip(a, redis, {5, 6}, sent=0, got=10)
    r = a.plan({6}, 100)
    assert r.release == ((5, 1),) and r.want == ((6, 2),)
    assert not a.holds(5, 100) and a.holds(6, 100)
    a.answered(r, redis.run("a", r, 105), 110)
    round_trip(b, redis, {5}, sent=120, got=130)
    assert b.holds(5, 130) and b.tenure(5) == 3


def test_a_lost_slot_is_dropped_and_a_stale_own_tenure_counts_as_another_holder() -> None:
    a, redis = table("a"), InMemorySlots(LEASE)
    round_trip(a, redis, {5}, sent=0, got=10)
    redis.keys[5] = ("b", 9, 10**9)  # b took it (a's lease ran out in Redis meanwhile)
    r = a.plan({5}, 100)
    changes = a.answered(r, redis.run("a", r, 100), 110)
    assert changes.lost == (5,) and not a.holds(5, 110) and a.holder(5, 110) == "b"
    restarted = table("a")  # a new process of a finds its old tenure: not its own
    redis.keys[5] = ("a", 1, 10**9)
    round_trip(restarted, redis, {5}, sent=200, got=210)
    assert not restarted.holds(5, 210) and restarted.holder(5, 210) is None


def test_a_lapsed_slot_may_be_renewed_if_nobody_took_it() -> None:
    """The local lease ran out (a slow round), Redis' did not: renewing keeps the tenure."""
    t, redis = table(), InMemorySlots(LEASE)
    round_trip(t, redis, {5}, sent=0, got=10)
    assert not t.holds(5, HOLD)
    r = t.plan({5}, HOLD + 1)
    t.answered(r, redis.run("a", r, HOLD + 2), HOLD + 3)
    assert t.holds(5, HOLD + 3) and t.tenure(5) == 1 and t.grants_from(5) == 10 + COPY


def test_answers_must_match_the_round() -> None:
    t = table()
    r = t.plan({1, 2}, 0)
    with pytest.raises(CoherenceInvariantError):
        t.answered(r, [Answer(1, Outcome.ACQUIRED, "a", 1)], 1)
    with pytest.raises(CoherenceInvariantError):
        t.answered(r, [Answer(2, Outcome.ACQUIRED, "a", 1), Answer(1, Outcome.OTHER, "b", 2)], 1)
    with pytest.raises(CoherenceInvariantError):
        t.plan({SLOTS}, 0)


@pytest.mark.parametrize("seed", range(20))
def test_never_two_acting_homes_and_no_grant_before_the_old_copies_ran_out(seed: int) -> None:
    """Random views (each node wants random slots), random Redis and answer delays, rounds
    lost on the way (a node cut off from Redis): at every step at most one node holds a
    slot; and a node that takes a slot over grants only a copy lease after the previous
    holder last held it (its copies run out within a copy lease of that)."""
    rng = random.Random(seed)
    nodes = {n: table(n) for n in "abc"}
    redis = InMemorySlots(LEASE)
    slots = range(4)
    runs: list[tuple[int, str, Round]] = []  # (Redis runs it at, node, round)
    answers: list[tuple[int, str, Round, list[Answer]]] = []  # (answer arrives at, ...)
    holding: dict[int, tuple[str, int]] = {}  # slot -> (node, last step it held it)
    handover: dict[int, int] = {}  # slot -> last step the previous holder held it
    next_round = dict.fromkeys(nodes, 0)
    cut_until = dict.fromkeys(nodes, 0)  # a node cut off from Redis loses its rounds
    for now in range(0, 60_000, 50):
        for run in sorted(r for r in runs if r[0] <= now):
            runs.remove(run)
            got = redis.run(run[1], run[2], now)
            if rng.random() < 0.9:  # else the answer is lost
                answers.append((now + rng.choice((0, 50, 400)), run[1], run[2], got))
        for due, node, r, got in [a for a in answers if a[0] <= now]:
            answers.remove((due, node, r, got))
            nodes[node].answered(r, got, now)
        for node, t in nodes.items():
            if now >= next_round[node]:
                next_round[node] = now + LEASE // 4
                r = t.plan({s for s in slots if rng.random() < 0.7}, now)
                if rng.random() < 0.05:
                    cut_until[node] = now + rng.choice((2000, 6000))
                if now >= cut_until[node] and rng.random() < 0.9:  # else it is lost
                    runs.append((now + rng.choice((0, 50, 100, 1500)), node, r))
        for s in slots:
            acting = [n for n, t in nodes.items() if t.holds(s, now)]
            assert len(acting) <= 1, (seed, now, s, acting)
            if not acting:
                continue
            node = acting[0]
            prev = holding.get(s)
            if prev is not None and prev[0] != node:
                handover[s] = prev[1]
            holding[s] = (node, now)
            grants_from = nodes[node].grants_from(s)
            if s in handover and now >= grants_from:
                assert grants_from >= handover[s] + COPY, (seed, now, s)
    assert len(holding) == len(slots) and handover  # slots were held and changed hands
