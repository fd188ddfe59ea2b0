"""Property tests over random member sets: movement and balance hold for every set."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from distcluster_worker.ring import HashRing, moved_keys

names = st.text(min_size=1, max_size=12)
member_sets = st.lists(names, min_size=1, max_size=8, unique=True)
KEYS = [f"k{i}" for i in range(1500)]


@settings(max_examples=40, deadline=None)
@given(members=member_sets, data=st.data())
def test_a_leave_moves_only_the_leavers_keys(members: list[str], data: st.DataObject) -> None:
    if len(members) < 2:
        members = [*members, members[0] + "-2"]
    leaver = data.draw(st.sampled_from(members))
    before = HashRing(members, vnodes=128)
    after = before.copy()
    after.remove(leaver)
    moved = moved_keys(before, after, KEYS)
    assert set(moved) == {k for k in KEYS if before.owner(k) == leaver}
    assert all(old == leaver and new != leaver for old, new in moved.values())


@settings(max_examples=40, deadline=None)
@given(members=member_sets, joiner=names)
def test_a_join_moves_keys_only_to_the_joiner(members: list[str], joiner: str) -> None:
    if joiner in members:
        joiner += "-new"
        if joiner in members:
            return
    before = HashRing(members, vnodes=128)
    after = before.copy()
    after.add(joiner)
    moved = moved_keys(before, after, KEYS)
    assert all(new == joiner for _, new in moved.values())
    assert set(moved) == {k for k in KEYS if after.owner(k) == joiner}


@settings(max_examples=30, deadline=None)
@given(members=member_sets, joiner=names)
def test_a_join_takes_at_most_one_nth_plus_5pct_of_the_key_space(
    members: list[str], joiner: str
) -> None:
    # Exact key-space fractions with the default vnodes, so no sampling noise.
    if joiner in members:
        return
    ring = HashRing([*members, joiner])
    assert ring.shares()[joiner] <= 1 / len(ring) + 0.05


@settings(max_examples=30, deadline=None)
@given(members=member_sets)
def test_default_ring_is_balanced_for_any_member_set(members: list[str]) -> None:
    shares = HashRing(members).shares()
    assert max(shares.values()) * len(members) <= 1.15
    assert math.isclose(sum(shares.values()), 1.0)


@settings(max_examples=30, deadline=None)
@given(members=member_sets, order=st.randoms(use_true_random=False))
def test_owners_do_not_depend_on_history(members: list[str], order: random.Random) -> None:
    shuffled = list(members)
    order.shuffle(shuffled)
    a = HashRing(members, vnodes=32)
    b = HashRing(vnodes=32)
    for member in shuffled:
        b.add(member)
    assert [a.owner(k) for k in KEYS[:300]] == [b.owner(k) for k in KEYS[:300]]
