"""Exclusive and shared modes, re-acquire and upgrade: one test per rule."""

from __future__ import annotations

from lock_driver import Driver

from distcluster_worker.locks import Granted, Queued, Refused


def test_exclusive_grant_uses_entry_index_as_token_and_clock_plus_ttl(d: Driver) -> None:
    assert d.acquire("r", "a", ttl_ms=500, request_id="x") == [
        Granted("x", "r", "a", "exclusive", 1, 1_500)
    ]
    assert d.table.view("r") == {
        "resource": "r",
        "holders": [{"owner": "a", "mode": "exclusive", "token": 1, "expires_at_ms": 1_500}],
        "waiters": [],
    }


def test_exclusive_conflicts_with_exclusive(d: Driver) -> None:
    d.acquire("r", "a")
    [refused] = d.acquire("r", "b", request_id="x")
    assert isinstance(refused, Refused)
    assert (refused.request_id, refused.code, refused.holders) == ("x", "locked", ("a",))


def test_many_shared_holders(d: Driver) -> None:
    [a] = d.acquire("r", "a", "shared")
    [b] = d.acquire("r", "b", "shared")
    assert isinstance(a, Granted) and isinstance(b, Granted)
    assert (a.token, b.token) == (1, 2)
    assert d.table.stats() == {"resources": 1, "holders": 2, "waiters": 0}


def test_shared_and_exclusive_exclude_each_other(d: Driver) -> None:
    d.acquire("r", "a", "shared")
    d.acquire("s", "a", "exclusive")
    [on_shared] = d.acquire("r", "b", "exclusive")
    [on_exclusive] = d.acquire("s", "b", "shared")
    assert isinstance(on_shared, Refused) and on_shared.code == "locked"
    assert isinstance(on_exclusive, Refused) and on_exclusive.code == "locked"


def test_reacquire_same_mode_keeps_token_and_expiry(d: Driver) -> None:
    d.acquire("r", "a", ttl_ms=500)
    assert d.at(1_200).acquire("r", "a", ttl_ms=9_000, request_id="again") == [
        Granted("again", "r", "a", "exclusive", 1, 1_500)
    ]


def test_reacquire_weaker_mode_reports_the_held_mode(d: Driver) -> None:
    d.acquire("r", "a", ttl_ms=500)
    assert d.acquire("r", "a", "shared", request_id="weaker") == [
        Granted("weaker", "r", "a", "exclusive", 1, 1_500)
    ]


def test_upgrade_in_place_when_sole_holder_and_nobody_waits(d: Driver) -> None:
    d.acquire("r", "a", "shared")
    assert d.at(2_000).acquire("r", "a", ttl_ms=300, request_id="up") == [
        Granted("up", "r", "a", "exclusive", 2, 2_300)
    ]
    assert [h["mode"] for h in d.table.view("r")["holders"]] == ["exclusive"]


def test_upgrade_waits_for_other_shared_holders(d: Driver) -> None:
    d.acquire("r", "a", "shared")
    [b] = d.acquire("r", "b", "shared")
    assert d.acquire("r", "a", wait_ms=5_000, request_id="up") == [Queued("up", "r", 1)]
    assert isinstance(b, Granted)
    [released, granted] = d.release("r", "b", b.token)
    assert granted == Granted("up", "r", "a", "exclusive", 4, 11_000)
    assert d.table.view("r")["holders"] == [
        {"owner": "a", "mode": "exclusive", "token": 4, "expires_at_ms": 11_000}
    ]


def test_upgrade_without_waiting_is_refused_when_others_hold(d: Driver) -> None:
    d.acquire("r", "a", "shared")
    d.acquire("r", "b", "shared")
    [refused] = d.acquire("r", "a")
    assert isinstance(refused, Refused) and refused.code == "locked"
    assert refused.holders == ("a", "b")


def test_upgrade_behind_a_waiting_writer_is_a_deadlock(d: Driver) -> None:
    # c waits for a's shared hold; a upgrading would queue behind c: neither can move.
    d.acquire("r", "a", "shared")
    d.acquire("r", "c", wait_ms=5_000)
    [refused] = d.acquire("r", "a", wait_ms=5_000)
    assert isinstance(refused, Refused)
    assert (refused.code, refused.cycle) == ("deadlock", ("a", "c", "a"))


def test_an_owner_waits_at_most_once_per_resource(d: Driver) -> None:
    d.acquire("r", "a")
    d.acquire("r", "b", wait_ms=5_000)
    [refused] = d.acquire("r", "b", "shared", wait_ms=5_000)
    assert isinstance(refused, Refused) and refused.code == "locked"
    assert len(d.table.view("r")["waiters"]) == 1


def test_released_resource_is_forgotten_and_tokens_keep_rising(d: Driver) -> None:
    [g] = d.acquire("r", "a")
    assert isinstance(g, Granted)
    d.release("r", "a", g.token)
    assert d.table.resources() == []
    assert d.table.view("r") == {"resource": "r", "holders": [], "waiters": []}
    [again] = d.acquire("r", "b")
    assert isinstance(again, Granted) and again.token == 3
