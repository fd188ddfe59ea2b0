"""Flapping: a member that comes and goes is reported once per change, never lost."""

from __future__ import annotations

from distcluster_worker.membership import Membership, MemberState
from distcluster_worker.ring import HashRing


def test_heartbeats_just_inside_the_bound_never_kill() -> None:
    m = Membership("a", ["b"], start_ms=0)
    t = 0
    for _ in range(50):
        m.heartbeat("b", t)
        t += 2999
        m.tick(t)
        assert "b" in m.live()
        assert m.state("b") is MemberState.SUSPECT


def test_heartbeats_just_outside_the_bound_flap_with_paired_events() -> None:
    m = Membership("a", ["b"], start_ms=0)
    joins = leaves = 0
    t = 0
    for _ in range(20):
        joins += len(m.heartbeat("b", t).joined)
        t += 3000
        leaves += len(m.tick(t).left)
    assert (joins, leaves) == (19, 20)
    assert m.live() == ("a",)


def test_a_shell_rebuilding_its_ring_from_changes_matches_live() -> None:
    m = Membership("n1", ["n2", "n3", "n4"], start_ms=0)
    ring = HashRing(m.live(), vnodes=16)
    schedule = [
        ("hb", "n2", 1000),
        ("tick", "", 3000),
        ("hb", "n3", 3500),
        ("tick", "", 4000),
        ("hb", "n4", 4100),
        ("tick", "", 7000),
        ("hb", "n2", 7100),
        ("tick", "", 9000),
    ]
    for action, member, t in schedule:
        changes = m.heartbeat(member, t) if action == "hb" else m.tick(t)
        for gone in changes.left:
            ring.remove(gone)
        for new in changes.joined:
            ring.add(new)
        assert ring.members == m.live()
    assert m.live() == ("n1", "n2")


def test_flapping_does_not_touch_other_members() -> None:
    m = Membership("a", ["b", "c"], start_ms=0)
    for t in range(0, 30_000, 500):
        m.heartbeat("c", t)
        if (t // 4000) % 2 == 0:
            m.heartbeat("b", t)
        changes = m.tick(t)
        assert "c" not in changes.left + changes.suspected
    assert m.state("c") is MemberState.ALIVE
    assert "c" in m.live()
