"""The ring's API: lookups, edits, errors, the JSON view, and the pinned hash."""

from __future__ import annotations

import pytest

from distcluster_worker.ring import (
    DEFAULT_VNODES,
    RING_SIZE,
    DuplicateMemberError,
    EmptyRingError,
    HashRing,
    UnknownMemberError,
    key_point,
    moved_keys,
    vnode_point,
)

THREE = ("node1", "node2", "node3")


def test_hash_is_pinned() -> None:
    # A changed hash moves nearly every topic in a rolling upgrade; it must never drift.
    assert key_point("orders") == 4206355722490265239
    assert vnode_point("node1", 0) == 12263240445706775339
    assert key_point("") != vnode_point("", 0)  # Separate domains.


def test_owners_are_pinned_for_a_known_ring() -> None:
    ring = HashRing(THREE)
    assert [ring.owner(f"t{i}") for i in range(5)] == ["node3", "node3", "node1", "node2", "node1"]
    assert ring.owners("orders", 3) == ["node3", "node1", "node2"]


def test_default_vnodes_meets_the_issue_minimum() -> None:
    assert DEFAULT_VNODES >= 200
    assert HashRing().vnodes == DEFAULT_VNODES


def test_empty_ring_refuses_lookups() -> None:
    ring = HashRing()
    assert ring.members == ()
    assert len(ring) == 0
    with pytest.raises(EmptyRingError):
        ring.owner("t")
    with pytest.raises(EmptyRingError):
        ring.owners("t", 2)
    assert ring.describe() == {
        "members": [],
        "vnodes_per_member": DEFAULT_VNODES,
        "points": 0,
        "share": {},
    }


def test_single_member_owns_everything() -> None:
    ring = HashRing(["solo"], vnodes=8)
    assert {ring.owner(f"k{i}") for i in range(100)} == {"solo"}
    assert ring.owners("k", 3) == ["solo"]
    assert ring.shares() == {"solo": 1.0}


def test_add_and_remove_edit_the_member_set() -> None:
    ring = HashRing(vnodes=16)
    ring.add("b")
    ring.add("a")
    assert ring.members == ("a", "b")
    assert "a" in ring and "z" not in ring
    with pytest.raises(DuplicateMemberError):
        ring.add("a")
    ring.remove("a")
    assert list(ring.members) == ["b"]
    with pytest.raises(UnknownMemberError):
        ring.remove("a")
    with pytest.raises(UnknownMemberError):
        ring.vnode_points("a")


@pytest.mark.parametrize("bad", ["", 3, None])
def test_bad_member_names_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        HashRing([bad])  # type: ignore[list-item]


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_bad_vnodes_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        HashRing(vnodes=bad)  # type: ignore[arg-type]


def test_duplicate_members_in_the_constructor_are_refused() -> None:
    with pytest.raises(DuplicateMemberError):
        HashRing(["a", "a"])


def test_owners_are_distinct_in_ring_order_and_start_with_the_owner() -> None:
    ring = HashRing(THREE, vnodes=64)
    for i in range(200):
        key = f"topic-{i}"
        replicas = ring.owners(key, 2)
        assert len(replicas) == 2 == len(set(replicas))
        assert replicas[0] == ring.owner(key)
        assert ring.owners(key, 5) == ring.owners(key, 3)
        assert sorted(ring.owners(key, 3)) == list(THREE)
    with pytest.raises(ValueError):
        ring.owners("t", 0)


def test_fallback_is_the_owner_once_the_owner_leaves() -> None:
    ring = HashRing(THREE, vnodes=64)
    for i in range(300):
        key = f"topic-{i}"
        owner, fallback = ring.owners(key, 2)
        without = ring.copy()
        without.remove(owner)
        assert without.owner(key) == fallback


def test_vnode_points_and_describe() -> None:
    ring = HashRing(THREE, vnodes=32)
    points = ring.vnode_points("node2")
    assert len(points) == 32 and points == sorted(points)
    assert all(0 <= p < RING_SIZE for p in points)
    assert points == sorted(vnode_point("node2", i) for i in range(32))
    view = ring.describe()
    assert view["members"] == list(THREE)
    assert view["vnodes_per_member"] == 32 and view["points"] == 96
    assert sum(view["share"].values()) == pytest.approx(1.0)


def test_copy_is_independent() -> None:
    ring = HashRing(THREE, vnodes=8)
    twin = ring.copy()
    twin.remove("node1")
    assert ring.members == THREE and twin.members == ("node2", "node3")
    ring.check()
    twin.check()


def test_moved_keys_names_old_and_new_owner() -> None:
    before = HashRing(["a", "b"], vnodes=64)
    after = before.copy()
    after.add("c")
    keys = [f"k{i}" for i in range(500)]
    moved = moved_keys(before, after, keys)
    assert moved, "a third member takes some keys"
    for key, (old, new) in moved.items():
        assert (old, new) == (before.owner(key), after.owner(key)) and new == "c"
    assert moved_keys(before, before.copy(), keys) == {}
