"""Errors of the membership core, and the one helper that checks an invariant.

Bad configuration (timeouts, ids) raises `ValueError` at construction. A broken internal
rule is a bug and raises `MembershipInvariantError` through `require`, never through a
bare `assert`, which `python -O` strips.
"""

from __future__ import annotations


class MembershipInvariantError(Exception):
    """The detector's state breaks a rule that must always hold (a bug, never bad input)."""


def require(condition: bool, message: str) -> None:
    """Raise `MembershipInvariantError(message)` unless `condition` holds."""
    if not condition:
        raise MembershipInvariantError(message)
