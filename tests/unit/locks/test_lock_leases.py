"""Release and renew: owner, token and a live lease are all required."""

from __future__ import annotations

from lock_driver import Driver

from distcluster_worker.locks import Expired, Refused, Released, Renewed


def test_release_by_holder(d: Driver) -> None:
    d.acquire("r", "a")
    assert d.release("r", "a", 1, request_id="x") == [Released("x", "r", "a", 1)]
    assert d.table.resources() == []


def test_release_with_wrong_owner_token_or_resource_is_refused(d: Driver) -> None:
    d.acquire("r", "a")
    for resource, owner, token in [("r", "b", 1), ("r", "a", 7), ("s", "a", 1)]:
        [refused] = d.release(resource, owner, token)
        assert isinstance(refused, Refused) and refused.code == "not_holder"
    assert d.table.view("r")["holders"][0]["owner"] == "a"


def test_release_after_expiry_is_refused(d: Driver) -> None:
    d.acquire("r", "a", ttl_ms=100)
    [expired, refused] = d.at(1_100).release("r", "a", 1)
    assert expired == Expired("r", "a", 1)
    assert isinstance(refused, Refused) and refused.code == "not_holder"


def test_release_of_one_shared_holder_keeps_the_others(d: Driver) -> None:
    d.acquire("r", "a", "shared")
    d.acquire("r", "b", "shared")
    d.release("r", "a", 1)
    assert [h["owner"] for h in d.table.view("r")["holders"]] == ["b"]


def test_renew_extends_from_the_current_clock(d: Driver) -> None:
    d.acquire("r", "a", ttl_ms=100)
    assert d.at(1_050).renew("r", "a", 1, 400, request_id="x") == [Renewed("x", "r", "a", 1, 1_450)]
    assert d.table.next_deadline_ms() == 1_450
    assert d.at(1_100).expire() == []
    assert d.at(1_450).expire() == [Expired("r", "a", 1)]


def test_renew_checks_owner_token_and_liveness(d: Driver) -> None:
    d.acquire("r", "a", ttl_ms=100)
    for owner, token in [("b", 1), ("a", 2)]:
        [refused] = d.renew("r", owner, token, 100)
        assert isinstance(refused, Refused) and refused.code == "not_holder"
    [expired, late] = d.at(1_100).renew("r", "a", 1, 100)
    assert expired == Expired("r", "a", 1)
    assert isinstance(late, Refused) and late.code == "not_holder"


def test_many_renewals_keep_deadlines_right(d: Driver) -> None:
    # Each renewal leaves a stale heap entry; the heap is rebuilt now and then.
    d.acquire("r", "a", ttl_ms=100)
    for step in range(3_000):
        d.at(1_000 + step).renew("r", "a", 1, 100)
    assert d.table.next_deadline_ms() == 3_999 + 100
    assert d.at(4_098).expire() == []
    assert d.at(4_099).expire() == [Expired("r", "a", 1)]
    assert d.table.next_deadline_ms() is None
