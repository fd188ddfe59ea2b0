"""Errors of the line store, and the one helper that checks an invariant.

`require` raises instead of asserting: `python -O` strips asserts, and a cache that quietly
grows past its budget fails far from the cause.
"""

from __future__ import annotations


class EvictionInvariantError(Exception):
    """The store's state breaks a rule that must always hold (a bug, never bad input)."""


class LineTooLargeError(ValueError):
    """A line bigger than the whole byte budget cannot be cached at all."""


def require(condition: bool, message: str) -> None:
    """Raise `EvictionInvariantError(message)` unless `condition` holds."""
    if not condition:
        raise EvictionInvariantError(message)
