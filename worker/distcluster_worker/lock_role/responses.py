"""How a lock-table outcome becomes an HTTP answer (pure; no I/O)."""

from __future__ import annotations

from typing import Any

from distcluster_worker.locks.outcomes import (
    Cancelled,
    Expired,
    Granted,
    Outcome,
    Queued,
    Refused,
    Released,
    Renewed,
)

_REFUSAL_STATUS = {
    "locked": (423, "locked"),
    "timeout": (423, "locked"),
    "deadlock": (409, "deadlock"),
    "not_holder": (409, "not_holder"),
    "invalid": (400, "bad_request"),
}


def outcome_answer(outcome: Outcome) -> tuple[int, dict[str, Any]]:
    """The status and JSON body a client gets for a final outcome."""
    if isinstance(outcome, Granted):
        body = {"granted": True, **_fields(outcome)}
        return 200, body
    if isinstance(outcome, Released):
        return 200, {"released": True, **_fields(outcome)}
    if isinstance(outcome, Renewed):
        return 200, {"renewed": True, **_fields(outcome)}
    if isinstance(outcome, Refused):
        return _refusal(outcome)
    if isinstance(outcome, Cancelled):
        return 423, _error("locked", "the wait was cancelled before the lock was granted")
    if isinstance(outcome, Queued | Expired):
        raise ValueError(f"{type(outcome).__name__} is not a final answer")
    raise TypeError(f"unknown outcome {outcome!r}")


def _refusal(outcome: Refused) -> tuple[int, dict[str, Any]]:
    status, code = _REFUSAL_STATUS.get(outcome.code, (409, outcome.code))
    extra: dict[str, Any] = {"reason": outcome.code}
    if outcome.cycle:
        extra["cycle"] = list(outcome.cycle)
    if code == "locked":
        extra["holders"] = list(outcome.holders)
    return status, _error(code, outcome.message, **extra)


def _fields(outcome: Granted | Released | Renewed) -> dict[str, Any]:
    # Flat dataclasses: read the slots directly (dataclasses.asdict deep-copies, and
    # this runs for every answer).
    return {name: getattr(outcome, name) for name in outcome.__slots__}


def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}
