"""Snapshots: canonical text, exact round trip, identical behaviour, refusal of bad text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lock_driver import Driver

from distcluster_worker.locks import (
    Cancelled,
    Expired,
    Granted,
    LockSnapshotError,
    LockTable,
    Outcome,
    Queued,
    Refused,
    Released,
    Renewed,
    outcome_from_dict,
)


def _busy(d: Driver) -> None:
    d.acquire("r1", "a", "shared", ttl_ms=2_000)
    d.acquire("r1", "b", "shared", ttl_ms=3_000)
    d.acquire("r1", "w", wait_ms=4_000, request_id="w1")
    d.acquire("r1", "c", "shared", wait_ms=6_000, request_id="c1")
    d.acquire("r2", "c", request_id="c2")
    d.acquire("gone", "z")
    d.release("gone", "z", 6)


def _script(d: Driver) -> list[Outcome]:
    out: list[Outcome] = []
    out += d.at(2_500).acquire("r2", "a", wait_ms=1_000)
    out += d.at(3_500).expire()
    out += d.acquire("w1-retry", "w", request_id="w1")
    out += d.at(9_000).expire()
    out += d.acquire("gone", "z")
    return out


def test_round_trip_is_byte_identical(d: Driver) -> None:
    _busy(d)
    text = d.table.snapshot()
    restored = LockTable.restore(text)
    assert restored.snapshot() == text
    assert restored.clock_ms == d.table.clock_ms
    assert restored.resources() == d.table.resources() == ["r1", "r2"]
    assert restored.view("r1") == d.table.view("r1")
    assert restored.next_deadline_ms() == d.table.next_deadline_ms()
    assert json.loads(text)["token_floor"] == 6


def test_restored_table_behaves_identically(d: Driver) -> None:
    _busy(d)
    twin = Driver(LockTable.restore(d.table.snapshot()))
    twin.now_ms, twin._ids = d.now_ms, d._ids
    assert _script(twin) == _script(d)
    assert twin.table.snapshot() == d.table.snapshot()


def test_token_floor_survives_restore(d: Driver) -> None:
    _busy(d)
    restored = Driver(LockTable.restore(d.table.snapshot()))
    [granted] = restored.acquire("gone", "z", request_id="fresh")
    assert isinstance(granted, Granted) and granted.token == 8


@pytest.mark.parametrize(
    "text",
    ["", "[]", "{}", '{"version": 2}', "not json"],
)
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(LockSnapshotError):
        LockTable.restore(text)


def test_corrupt_fields_are_refused(d: Driver) -> None:
    _busy(d)
    good = json.loads(d.table.snapshot())
    corruptions = [
        ("clock_ms", -1),
        ("dedup", [["x", {"type": "granted"}]]),
        ("resources", [{"name": "r", "last_token": 1, "holders": [["a"]], "queue": []}]),
        ("resources", [{"name": "r", "last_token": 0, "holders": [], "queue": []}]),
        ("last_index", 1),
    ]
    for key, value in corruptions:
        with pytest.raises(LockSnapshotError):
            LockTable.restore(json.dumps({**good, key: value}))


def test_two_exclusive_holders_in_a_snapshot_are_refused(d: Driver) -> None:
    d.acquire("r", "a")
    body = json.loads(d.table.snapshot())
    body["resources"][0]["holders"].append(["b", "exclusive", 1, 11_000])
    with pytest.raises(LockSnapshotError, match="exclusive"):
        LockTable.restore(json.dumps(body))


def test_every_outcome_round_trips_through_its_dict() -> None:
    outcomes: list[Outcome] = [
        Granted("q", "r", "o", "shared", 3, 9),
        Queued("q", "r", 2),
        Refused("q", "deadlock", "m", cycle=("a", "b", "a")),
        Refused("q", "locked", "m", holders=("a",)),
        Released("q", "r", "o", 3),
        Renewed("q", "r", "o", 3, 10),
        Expired("r", "o", 3),
        Cancelled("q", "r"),
    ]
    for outcome in outcomes:
        data = json.loads(json.dumps(outcome.to_dict()))
        assert outcome_from_dict(data) == outcome
    assert Expired("r", "o", 3).to_dict() == {
        "type": "expired",
        "resource": "r",
        "owner": "o",
        "token": 3,
        "request_id": "",
    }
    with pytest.raises(ValueError):
        outcome_from_dict({**Queued("q", "r", 1).to_dict(), "position": "1"})


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


@settings(max_examples=200, deadline=None)
@given(st.data(), JSON)
def test_a_mutated_snapshot_restores_cleanly_or_is_refused(data: st.DataObject, junk: Any) -> None:
    d = Driver()
    _busy(d)
    body = json.loads(d.table.snapshot())
    path = data.draw(st.sampled_from(_paths(body)[1:]))
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = junk
    try:
        restored = LockTable.restore(json.dumps(body))
    except LockSnapshotError:
        return
    restored.check_invariants()
