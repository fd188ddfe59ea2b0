"""Commands of the lock table: parsing untrusted JSON into typed, validated values.

The shell validates requests before proposing them, but the table cannot rely on that: a
log entry written by an older or buggy node is applied on every replica, so a malformed
command must be refused the same way everywhere instead of raising. `parse_command` is
therefore total: any input yields either a command or an `Invalid` with the reason.

Unknown keys are ignored so that a newer shell may add fields (tracing ids, say) without
older replicas refusing its entries. Integers must be real `int`s (not `bool`, not
floats) and no larger than `MAX_INT`, so every replica and every JSON reader agrees.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from distcluster_worker.locks.outcomes import MODES, Mode

MAX_INT = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Acquire:
    request_id: str
    resource: str
    owner: str
    mode: Mode
    ttl_ms: int
    wait_ms: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class Release:
    request_id: str
    resource: str
    owner: str
    token: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class Renew:
    request_id: str
    resource: str
    owner: str
    token: int
    ttl_ms: int
    now_ms: int


@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraw the waiting acquire whose request id is `request_id`."""

    request_id: str
    now_ms: int


@dataclass(frozen=True, slots=True)
class Expire:
    """Only advance the clock: proposed by the leader once `next_deadline_ms()` passed."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a command was refused; `request_id` is echoed when it was a string."""

    request_id: str
    message: str


Command: TypeAlias = Acquire | Release | Renew | Cancel | Expire


class _BadFieldError(Exception):
    """Internal: one field failed validation (never escapes `parse_command`)."""


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise _BadFieldError(f"{key!r} must be a non-empty string")
    return value


def _int(raw: Mapping[str, Any], key: str, minimum: int) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _BadFieldError(f"{key!r} must be an integer")
    if not minimum <= value <= MAX_INT:
        raise _BadFieldError(f"{key!r} must be between {minimum} and {MAX_INT}")
    return value


def _mode(raw: Mapping[str, Any]) -> Mode:
    value = raw.get("mode")
    for mode in MODES:
        if value == mode and isinstance(value, str):
            return mode
    raise _BadFieldError("'mode' must be 'exclusive' or 'shared'")


def _build(op: object, raw: Mapping[str, Any]) -> Command:
    """Dispatch on `op`; every field access validates and may raise `_BadFieldError`."""
    if op == "acquire":
        return Acquire(
            _text(raw, "request_id"),
            _text(raw, "resource"),
            _text(raw, "owner"),
            _mode(raw),
            _int(raw, "ttl_ms", 1),
            _int(raw, "wait_ms", 0),
            _int(raw, "now_ms", 0),
        )
    if op == "release":
        return Release(
            _text(raw, "request_id"),
            _text(raw, "resource"),
            _text(raw, "owner"),
            _int(raw, "token", 0),
            _int(raw, "now_ms", 0),
        )
    if op == "renew":
        return Renew(
            _text(raw, "request_id"),
            _text(raw, "resource"),
            _text(raw, "owner"),
            _int(raw, "token", 0),
            _int(raw, "ttl_ms", 1),
            _int(raw, "now_ms", 0),
        )
    if op == "cancel":
        return Cancel(_text(raw, "request_id"), _int(raw, "now_ms", 0))
    if op == "expire":
        return Expire(_int(raw, "now_ms", 0))
    raise _BadFieldError(f"unknown op {op!r}")


def parse_command(raw: object) -> Command | Invalid:
    """Validate one command; never raises, whatever `raw` is."""
    if not isinstance(raw, Mapping):
        return Invalid("", "command must be a JSON object")
    request_id = raw.get("request_id")
    echo = request_id if isinstance(request_id, str) else ""
    try:
        return _build(raw.get("op"), raw)
    except _BadFieldError as bad:
        return Invalid(echo, str(bad))
