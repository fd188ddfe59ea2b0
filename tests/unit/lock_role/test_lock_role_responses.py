"""Outcome -> HTTP answer mapping of the lock API contract."""

from __future__ import annotations

import pytest

from distcluster_worker.lock_role.responses import outcome_answer
from distcluster_worker.locks.outcomes import Expired, Granted, Queued, Refused, Released


def test_grant_is_200_with_token_and_expiry() -> None:
    status, body = outcome_answer(Granted("r1", "res", "alice", "exclusive", 7, 1000))
    assert status == 200
    assert body["granted"] is True and body["token"] == 7 and body["expires_at_ms"] == 1000


@pytest.mark.parametrize(
    ("code", "status", "api_code"),
    [
        ("locked", 423, "locked"),
        ("timeout", 423, "locked"),
        ("deadlock", 409, "deadlock"),
        ("not_holder", 409, "not_holder"),
        ("invalid", 400, "bad_request"),
    ],
)
def test_refusals_map_to_contract_codes(code: str, status: int, api_code: str) -> None:
    got_status, body = outcome_answer(Refused("r1", code, "no", ("a", "b", "a")))  # type: ignore[arg-type]
    assert got_status == status
    assert body["error"]["code"] == api_code


def test_deadlock_answer_names_the_cycle() -> None:
    _, body = outcome_answer(Refused("r1", "deadlock", "cycle", ("a", "b", "a")))
    assert body["error"]["cycle"] == ["a", "b", "a"]


def test_release_is_200() -> None:
    assert outcome_answer(Released("r1", "res", "alice", 3))[0] == 200


@pytest.mark.parametrize("outcome", [Queued("r", "res", 1), Expired("res", "a", 3)])
def test_non_final_outcomes_are_not_answers(outcome: object) -> None:
    with pytest.raises(ValueError):
        outcome_answer(outcome)  # type: ignore[arg-type]
