"""Errors of the hash ring, and the one helper that checks an invariant.

Lookups on an empty ring and edits that name a wrong member are caller errors with their
own types, so a shell can map them to HTTP answers. A broken internal rule is a bug and
raises `RingInvariantError` through `require`, never through `assert`, which `python -O`
strips: two nodes that silently disagree about topic owners are worse than one that stops.
"""

from __future__ import annotations


class RingError(Exception):
    """Base class of every error raised by the ring package."""


class EmptyRingError(RingError, LookupError):
    """A lookup was asked of a ring without members."""


class UnknownMemberError(RingError, KeyError):
    """The named member is not on the ring."""


class DuplicateMemberError(RingError, ValueError):
    """The named member is already on the ring."""


class RingInvariantError(RingError):
    """The ring's state breaks a rule that must always hold (a bug, never bad input)."""


def require(condition: bool, message: str) -> None:
    """Raise `RingInvariantError(message)` unless `condition` holds."""
    if not condition:
        raise RingInvariantError(message)
