"""Members learned at run time (discovery): dead until heard, forgotten when they leave."""

from __future__ import annotations

from distcluster_worker.membership import NO_CHANGES, Changes, Membership, MemberState

T0 = 10_000


def cluster() -> Membership:
    return Membership("n1", ["n2"], start_ms=T0)


def test_an_added_member_stays_off_the_ring_until_it_is_heard() -> None:
    m = cluster()
    assert m.add("n4", T0 + 10) == NO_CHANGES
    assert m.members == ("n1", "n2", "n4")
    assert m.state("n4") is MemberState.DEAD
    assert m.live() == ("n1", "n2")
    # No timeout can move it either way while it is silent, however long that lasts.
    assert m.tick(T0 + 60_000).left == ("n2",)
    assert m.state("n4") is MemberState.DEAD
    assert m.heartbeat("n4", T0 + 60_001, incarnation=5) == Changes(joined=("n4",))
    assert m.live() == ("n1", "n4")


def test_a_heard_added_member_dies_like_any_other() -> None:
    m = cluster()
    m.add("n4", T0)
    m.heartbeat("n4", T0 + 100)
    assert m.tick(T0 + 100 + 3000).left == ("n2", "n4")


def test_adding_a_known_member_or_self_changes_nothing() -> None:
    m = cluster()
    m.heartbeat("n2", T0 + 5)
    assert m.add("n2", T0 + 10) == NO_CHANGES
    assert m.state("n2") is MemberState.ALIVE
    assert m.add("n1", T0 + 10) == NO_CHANGES
    assert m.members == ("n1", "n2")


def test_forgetting_a_live_member_takes_it_off_the_ring_at_once() -> None:
    m = cluster()
    m.add("n4", T0)
    m.heartbeat("n4", T0 + 1)
    assert m.forget("n4", T0 + 2) == Changes(left=("n4",))
    assert m.members == ("n1", "n2")
    # A heartbeat from a forgotten member is a stranger's: it does not come back by itself.
    assert m.heartbeat("n4", T0 + 3) == NO_CHANGES
    assert m.snapshot()["unknown_heartbeats"] == 1


def test_forgetting_a_dead_or_unknown_member_changes_no_ring() -> None:
    m = cluster()
    m.add("n4", T0)
    assert m.forget("n4", T0 + 1) == NO_CHANGES
    assert m.forget("n9", T0 + 1) == NO_CHANGES


def test_added_members_count_as_unheard_until_their_first_heartbeat() -> None:
    m = cluster()
    assert m.unheard() == ()
    m.add("n5", T0)
    m.add("n4", T0)
    assert m.unheard() == ("n4", "n5")
    m.heartbeat("n4", T0 + 1)
    assert m.unheard() == ("n5",)
    m.tick(T0 + 10_000)  # n4 dies: it was heard, so it is not unheard again
    assert m.unheard() == ("n5",)
    m.forget("n5", T0 + 10_001)
    assert m.unheard() == ()
