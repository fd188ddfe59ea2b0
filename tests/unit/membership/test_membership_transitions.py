"""Every transition of the failure detector, one scenario per rule.

Timeouts are the defaults (suspect after 1500 ms, dead after 3000 ms) and the clock
starts at 10_000 ms so that no rule can pass by accident at zero.
"""

from __future__ import annotations

import pytest

from distcluster_worker.membership import NO_CHANGES, Changes, Membership, MemberState

T0 = 10_000
ALIVE, SUSPECT, DEAD = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD


def cluster(start_ms: int | None = T0) -> Membership:
    return Membership("n1", ["n1", "n2", "n3"], start_ms=start_ms)


def test_peers_start_alive_and_self_is_not_a_peer() -> None:
    m = cluster()
    assert m.members == ("n1", "n2", "n3")
    assert m.live() == ("n1", "n2", "n3")
    assert [m.state(x) for x in m.members] == [ALIVE, ALIVE, ALIVE]
    with pytest.raises(KeyError):
        m.state("n9")


@pytest.mark.parametrize(
    ("silent_ms", "state", "changes"),
    [
        (0, ALIVE, NO_CHANGES),
        (1499, ALIVE, NO_CHANGES),
        (1500, SUSPECT, Changes(suspected=("n2",))),
        (2999, SUSPECT, Changes(suspected=("n2",))),
        (3000, DEAD, Changes(left=("n2",))),
        (60_000, DEAD, Changes(left=("n2",))),
    ],
)
def test_one_tick_after_silence(silent_ms: int, state: MemberState, changes: Changes) -> None:
    m = cluster()
    m.heartbeat("n3", T0 + silent_ms)  # n3 keeps talking; only n2 is silent.
    assert m.tick(T0 + silent_ms) == changes
    assert m.state("n2") is state
    assert m.state("n3") is ALIVE
    assert ("n2" in m.live()) is (state is not DEAD)


def test_alive_suspect_dead_alive() -> None:
    m = cluster()
    assert m.tick(T0 + 1500) == Changes(suspected=("n2", "n3"))
    assert m.live() == ("n1", "n2", "n3"), "suspects stay on the ring"
    assert m.heartbeat("n3", T0 + 1600) == Changes(recovered=("n3",))
    assert m.tick(T0 + 3000) == Changes(left=("n2",))
    assert m.live() == ("n1", "n3")
    assert m.tick(T0 + 3099) == NO_CHANGES, "each change is reported once"
    assert m.heartbeat("n2", T0 + 4000) == Changes(joined=("n2",))
    assert m.state("n2") is ALIVE and m.live() == ("n1", "n2", "n3")


def test_heartbeats_keep_a_member_alive() -> None:
    m = cluster()
    for t in range(T0, T0 + 20_000, 1000):
        m.heartbeat("n2", t)
        m.heartbeat("n3", t)
        assert m.tick(t + 999) == NO_CHANGES


def test_report_unreachable_suspects_but_keeps_the_member_live() -> None:
    m = cluster()
    m.heartbeat("n2", T0 + 100)
    assert m.report_unreachable("n2", T0 + 200) == Changes(suspected=("n2",))
    assert m.state("n2") is SUSPECT and "n2" in m.live()
    assert m.report_unreachable("n2", T0 + 300) == NO_CHANGES
    assert m.tick(T0 + 3099) == Changes(left=("n3",)), "death still counts from last heard"
    assert m.tick(T0 + 3100) == Changes(left=("n2",))
    assert m.report_unreachable("n2", T0 + 3200) == NO_CHANGES
    assert m.report_unreachable("n9", T0 + 3200) == NO_CHANGES
    assert m.report_unreachable("n1", T0 + 3200) == NO_CHANGES


def test_suspect_recovers_on_heartbeat() -> None:
    m = cluster()
    m.report_unreachable("n2", T0)
    assert m.heartbeat("n2", T0 + 1) == Changes(recovered=("n2",))
    assert m.state("n2") is ALIVE


def test_a_tick_can_jump_from_alive_straight_to_dead() -> None:
    m = cluster()
    assert m.tick(T0 + 5000) == Changes(left=("n2", "n3"))
    assert m.live() == ("n1",)


def test_self_is_always_live_and_its_heartbeats_are_ignored() -> None:
    m = cluster()
    assert m.heartbeat("n1", T0 + 5) == NO_CHANGES
    m.tick(T0 + 100_000)
    assert m.state("n1") is ALIVE and m.live() == ("n1",)
    assert m.snapshot()["members"]["n1"]["state"] == "alive"


def test_unknown_senders_are_ignored_and_counted() -> None:
    m = cluster()
    assert m.heartbeat("intruder", T0) == NO_CHANGES
    assert "intruder" not in m.members
    assert m.snapshot()["unknown_heartbeats"] == 1


def test_stale_incarnation_is_ignored_and_newer_one_is_a_restart() -> None:
    m = cluster()
    assert m.heartbeat("n2", T0, incarnation=5) == NO_CHANGES
    m.tick(T0 + 3000)
    assert m.heartbeat("n2", T0 + 3001, incarnation=4) == NO_CHANGES, "a delayed old packet"
    assert m.state("n2") is DEAD
    assert m.heartbeat("n2", T0 + 3002, incarnation=6) == Changes(joined=("n2",), restarted=("n2",))
    assert m.heartbeat("n2", T0 + 3003, incarnation=6) == NO_CHANGES
    assert m.snapshot()["members"]["n2"]["incarnation"] == 6


def test_restart_of_a_live_member_is_reported_without_a_ring_change() -> None:
    m = cluster()
    m.heartbeat("n2", T0, incarnation=1)
    changes = m.heartbeat("n2", T0 + 10, incarnation=2)
    assert changes == Changes(restarted=("n2",)) and not changes.ring_changed


def test_time_never_goes_backwards() -> None:
    m = cluster()
    m.tick(T0 + 2000)
    m.heartbeat("n2", T0 + 500)  # Stamped late: counts as heard at the current clock.
    assert m.clock_ms == T0 + 2000
    assert m.snapshot()["members"]["n2"]["last_heard_ms"] == T0 + 2000
    assert m.tick(T0 + 4999) == Changes(left=("n3",), suspected=("n2",))
    assert m.state("n2") is SUSPECT, "dead only 3000 ms after the clamped time"


def test_start_defaults_to_the_first_time_seen() -> None:
    m = cluster(start_ms=None)
    assert m.clock_ms is None and m.next_deadline_ms() is None
    assert m.tick(5_000_000) == NO_CHANGES, "an arbitrary monotonic origin is fine"
    assert m.tick(5_000_000 + 2999) == Changes(suspected=("n2", "n3"))
    assert m.tick(5_000_000 + 3000) == Changes(left=("n2", "n3"))


def test_snapshot_shape() -> None:
    m = cluster()
    m.heartbeat("n2", T0 + 10, incarnation=3)
    m.tick(T0 + 1505)
    snap = m.snapshot()
    assert snap["self_id"] == "n1" and snap["clock_ms"] == T0 + 1505
    assert snap["live"] == ["n1", "n2", "n3"]
    assert snap["members"]["n2"] == {
        "state": "alive",
        "self": False,
        "last_heard_ms": T0 + 10,
        "since_ms": T0,
        "incarnation": 3,
    }
    assert snap["members"]["n3"]["state"] == "suspect"
    assert snap["members"]["n3"]["last_heard_ms"] is None
    assert snap["members"]["n3"]["since_ms"] == T0 + 1505


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"suspect_after_ms": 0}, ValueError),
        ({"suspect_after_ms": 3000, "dead_after_ms": 3000}, ValueError),
        ({"suspect_after_ms": 4000}, ValueError),
    ],
)
def test_bad_timeouts_are_refused(kwargs: dict[str, int], error: type[Exception]) -> None:
    with pytest.raises(error):
        Membership("n1", ["n2"], **kwargs)


def test_bad_ids_and_times_are_refused() -> None:
    with pytest.raises(ValueError):
        Membership("", ["n2"])
    with pytest.raises(ValueError):
        Membership("n1", ["n2", ""])
    m = cluster()
    with pytest.raises(TypeError):
        m.tick(1.5)  # type: ignore[arg-type]


def test_duplicate_peers_collapse() -> None:
    assert Membership("a", ["b", "b", "a", "c"]).members == ("a", "b", "c")
