"""Errors of the coherence core, and the one helper that checks an invariant.

Invariants are checked with `require`, never with a bare `assert`: `python -O` strips
asserts, and a directory that silently lets two nodes hold a line in M is a stale read
waiting to happen, so it must stop loudly instead.
"""

from __future__ import annotations


class CoherenceInvariantError(Exception):
    """The directory's state breaks a rule that must always hold (a bug, never bad input)."""


class UnknownTransactionError(KeyError):
    """A transaction id that the directory never issued, or one already finished."""


class NotReadyError(RuntimeError):
    """A write was completed while some other copy is neither invalidated nor expired."""


def require(condition: bool, message: str) -> None:
    """Raise `CoherenceInvariantError(message)` unless `condition` holds."""
    if not condition:
        raise CoherenceInvariantError(message)
