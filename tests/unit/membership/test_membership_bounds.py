"""Timing bounds: never dead before dead_after_ms of silence, always dead at it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distcluster_worker.membership import Changes, Membership, MemberState


@pytest.mark.parametrize(("suspect_ms", "dead_ms"), [(1500, 3000), (100, 250), (1, 2)])
def test_death_exactly_at_the_bound_with_a_tick_every_ms(suspect_ms: int, dead_ms: int) -> None:
    m = Membership("a", ["b"], suspect_after_ms=suspect_ms, dead_after_ms=dead_ms, start_ms=0)
    m.heartbeat("b", 1000)
    states = {t: (m.tick(t), m.state("b"))[1] for t in range(1000, 1000 + dead_ms + 5)}
    first_suspect = min(t for t, s in states.items() if s is MemberState.SUSPECT)
    first_dead = min(t for t, s in states.items() if s is MemberState.DEAD)
    assert first_suspect == 1000 + suspect_ms
    assert first_dead == 1000 + dead_ms


def test_default_bound_is_at_most_3s() -> None:
    m = Membership("a", ["b"], start_ms=0)
    m.heartbeat("b", 0)
    assert m.tick(2999) == Changes(suspected=("b",))
    assert m.tick(3000) == Changes(left=("b",))


def test_next_deadline_lets_a_shell_sleep_exactly() -> None:
    m = Membership("a", ["b", "c"], start_ms=0)
    m.heartbeat("b", 700)
    assert m.next_deadline_ms() == 1500  # c, never heard, suspected 1500 ms after start
    m.tick(1500)
    assert m.next_deadline_ms() == 2200  # b's suspicion
    m.tick(2200)
    assert m.next_deadline_ms() == 3000  # c's death
    m.tick(3000)
    assert m.next_deadline_ms() == 3700
    m.tick(3700)
    assert m.next_deadline_ms() is None and m.live() == ("a",)
    m.heartbeat("c", 9000)
    assert m.next_deadline_ms() == 10_500


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    suspect_ms=st.integers(1, 500),
    extra_ms=st.integers(1, 500),
)
def test_random_schedules_respect_the_bounds(seed: int, suspect_ms: int, extra_ms: int) -> None:
    """Random heartbeats and ticks against a reference: dead iff silent >= dead_after_ms."""
    rng = random.Random(seed)
    dead_ms = suspect_ms + extra_ms
    peers = ["p1", "p2", "p3"]
    m = Membership("me", peers, suspect_after_ms=suspect_ms, dead_after_ms=dead_ms, start_ms=0)
    heard = dict.fromkeys(peers, 0)
    live = {"me", *peers}
    now = 0
    for _ in range(150):
        now += rng.randint(0, dead_ms // 2 + 1)
        if rng.random() < 0.5:
            peer = rng.choice(peers)
            changes = m.heartbeat(peer, now)
            heard[peer] = now
            assert changes.left == ()
            live.update(changes.joined)
        else:
            changes = m.tick(now)
            live.difference_update(changes.left)
            assert changes.joined == ()
            for peer in peers:
                silent = now - heard[peer]
                assert (m.state(peer) is MemberState.DEAD) is (silent >= dead_ms)
                if silent < suspect_ms:
                    assert m.state(peer) is MemberState.ALIVE
        assert m.live() == tuple(sorted(live)), "changes replay to the live set"
        assert m.state("me") is MemberState.ALIVE
        m.check()
