"""Errors raised by the Raft core, and the invariant helper.

`NotLeader` is the one error a caller is expected to handle: `propose` and
`read_index` raise it on a node that is not the leader, naming the leader it knows
of (or None) so the shell can forward the request.

`RaftInvariantError` means the core found a state that Raft says can never happen
(a term going down, a committed entry about to be truncated). It is raised by
`check`, never by a bare `assert`, so the checks stay on under `python -O`.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class NotLeader(Exception):  # noqa: N818 (the public name other modules code against)
    """This node cannot serve the request; `leader_id` is the leader it knows of."""

    def __init__(self, leader_id: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id})")
        self.leader_id = leader_id


class RaftInvariantError(Exception):
    """A Raft safety invariant does not hold: a bug, or corrupted storage."""


def check(condition: bool, message: str) -> None:
    """Raise `RaftInvariantError(message)` unless `condition` holds."""
    if not condition:
        raise RaftInvariantError(message)


def present(value: T | None, message: str) -> T:
    """`value`, which must not be None (else `RaftInvariantError(message)`)."""
    if value is None:
        raise RaftInvariantError(message)
    return value
