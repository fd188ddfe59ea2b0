"""Idempotent retries by request id, the bounded dedup map, and malformed commands."""

from __future__ import annotations

from typing import Any

import pytest
from lock_driver import Driver

from distcluster_worker.locks import Granted, LockTable, Queued, Refused, Released


def test_retry_of_a_grant_returns_it_without_granting_again(d: Driver) -> None:
    [granted] = d.acquire("r", "a", request_id="x")
    d.release("r", "a", 1)
    d.acquire("r", "b")
    assert d.acquire("r", "a", request_id="x") == [granted]
    assert [h["owner"] for h in d.table.view("r")["holders"]] == ["b"]


def test_retry_of_a_release_does_not_release_a_later_lease(d: Driver) -> None:
    d.acquire("r", "a")
    assert d.release("r", "a", 1, request_id="rel") == [Released("rel", "r", "a", 1)]
    d.acquire("r", "a")
    assert d.release("r", "a", 1, request_id="rel") == [Released("rel", "r", "a", 1)]
    assert d.table.view("r")["holders"][0]["token"] == 3


def test_retry_while_waiting_returns_queued_then_the_grant(d: Driver) -> None:
    d.acquire("r", "a")
    d.acquire("r", "b", wait_ms=9_000, request_id="b1")
    assert d.acquire("r", "b", wait_ms=9_000, request_id="b1") == [Queued("b1", "r", 1)]
    [_, granted] = d.release("r", "a", 1)
    assert d.acquire("r", "b", wait_ms=9_000, request_id="b1") == [granted]
    assert granted == Granted("b1", "r", "b", "exclusive", 4, 11_000)


def test_retry_of_a_refusal_is_the_same_refusal(d: Driver) -> None:
    d.acquire("r", "a")
    [locked] = d.acquire("r", "b", request_id="b1")
    d.release("r", "a", 1)
    assert d.acquire("r", "b", request_id="b1") == [locked]


def test_dedup_map_is_bounded_oldest_first() -> None:
    d = Driver(LockTable(dedup_capacity=2))
    d.acquire("r1", "a", request_id="x1")
    d.acquire("r2", "a", request_id="x2")
    d.acquire("r3", "a", request_id="x3")
    # x1 was dropped: the retry is executed again (a re-acquire of a held lock).
    assert d.acquire("r1", "a", "shared", request_id="x1") == [
        Granted("x1", "r1", "a", "exclusive", 1, 11_000)
    ]
    assert '"x1"' in d.table.snapshot() and '"x2"' not in d.table.snapshot()


def test_zero_capacity_disables_dedup() -> None:
    d = Driver(LockTable(dedup_capacity=0))
    d.acquire("r", "a", request_id="x")
    [refused] = d.acquire("r", "b", request_id="x")
    assert isinstance(refused, Refused) and refused.code == "locked"


@pytest.mark.parametrize("capacity", [-1, True, 1.5])
def test_bad_capacity_is_rejected(capacity: Any) -> None:
    with pytest.raises(ValueError):
        LockTable(dedup_capacity=capacity)


GOOD = {
    "op": "acquire",
    "request_id": "q",
    "resource": "r",
    "owner": "o",
    "mode": "shared",
    "ttl_ms": 10,
    "wait_ms": 0,
    "now_ms": 99_000,
}

MALFORMED: list[Any] = [
    None,
    [],
    "acquire",
    {},
    {"op": "nope", "now_ms": 1},
    {"op": "expire"},
    {"op": "expire", "now_ms": -1},
    {"op": "expire", "now_ms": 1.0},
    {"op": "expire", "now_ms": True},
    {"op": "expire", "now_ms": 2**63},
    {"op": "cancel", "now_ms": 1},
    {**GOOD, "mode": "EXCLUSIVE"},
    {**GOOD, "ttl_ms": 0},
    {**GOOD, "wait_ms": -1},
    {**GOOD, "owner": ""},
    {**GOOD, "resource": 5},
    {**GOOD, "request_id": None},
    {"op": "release", "request_id": "q", "resource": "r", "owner": "o", "now_ms": 1},
    {"op": "renew", "request_id": "q", "resource": "r", "owner": "o", "token": 1, "now_ms": 1},
]


@pytest.mark.parametrize("command", MALFORMED)
def test_malformed_command_is_refused_and_changes_nothing(d: Driver, command: Any) -> None:
    d.acquire("r", "a", ttl_ms=100)
    before = d.table.snapshot()
    [refused] = d.table.apply(2, command)
    assert isinstance(refused, Refused) and refused.code == "invalid"
    assert d.table.snapshot() == before


def test_invalid_echoes_a_string_request_id(d: Driver) -> None:
    [refused] = d.table.apply(1, {**GOOD, "ttl_ms": -5})
    assert isinstance(refused, Refused)
    assert (refused.request_id, refused.code) == ("q", "invalid")
    assert "ttl_ms" in refused.message


@pytest.mark.parametrize("index", [0, 1, -3, True, "2", None])
def test_index_must_increase(d: Driver, index: Any) -> None:
    d.acquire("r", "a")
    before = d.table.snapshot()
    [refused] = d.table.apply(index, GOOD)
    assert isinstance(refused, Refused) and refused.code == "invalid"
    assert d.table.snapshot() == before


def test_unknown_fields_are_ignored(d: Driver) -> None:
    [granted] = d.table.apply(1, {**GOOD, "trace_id": "t"})
    assert isinstance(granted, Granted)
