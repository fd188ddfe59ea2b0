"""Errors of the lock table, and the one helper that checks an invariant.

Invariants are checked with `require`, never with a bare `assert`: `python -O` strips
asserts, and a replicated state machine that silently drifts from its peers is worse than
one that stops loudly.
"""

from __future__ import annotations


class LockInvariantError(Exception):
    """The table's state breaks a rule that must always hold (a bug, never bad input)."""


class LockSnapshotError(ValueError):
    """A snapshot text is not a valid lock table (corrupt, truncated or foreign)."""


def require(condition: bool, message: str) -> None:
    """Raise `LockInvariantError(message)` unless `condition` holds."""
    if not condition:
        raise LockInvariantError(message)
