"""Movement bounds: a leave moves only the leaver's keys; a join moves at most 1/n + 5%."""

from __future__ import annotations

from distcluster_worker.ring import HashRing, moved_keys

KEYS = [f"topic-{i}" for i in range(20_000)]


def test_leave_moves_only_the_leavers_keys() -> None:
    before = HashRing(["node1", "node2", "node3", "node4"])
    after = before.copy()
    after.remove("node3")
    moved = moved_keys(before, after, KEYS)
    owned = [k for k in KEYS if before.owner(k) == "node3"]
    assert set(moved) == set(owned)
    assert all(old == "node3" for old, _ in moved.values())
    print(f"\nleave 4->3: moved {len(moved) / len(KEYS):.4f} of keys (all from node3)")


def test_join_moves_at_most_one_nth_plus_5pct_and_only_to_the_joiner() -> None:
    before = HashRing(["node1", "node2", "node3"])
    after = before.copy()
    after.add("node4")
    moved = moved_keys(before, after, KEYS)
    fraction = len(moved) / len(KEYS)
    print(f"\njoin 3->4: moved {fraction:.4f} of keys (bound {1 / 4 + 0.05:.2f})")
    assert fraction <= 1 / 4 + 0.05
    assert all(new == "node4" for _, new in moved.values())
    assert set(moved) == {k for k in KEYS if after.owner(k) == "node4"}


def test_leave_then_rejoin_restores_every_owner() -> None:
    ring = HashRing(["node1", "node2", "node3"])
    original = {k: ring.owner(k) for k in KEYS[:2000]}
    ring.remove("node2")
    ring.add("node2")
    assert {k: ring.owner(k) for k in original} == original
