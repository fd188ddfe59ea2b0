"""Errors raised by the Raft core, and the invariant helper.

`NotLeader` is the error a caller is expected to handle: `propose` and
`read_index` raise it on a node that is not the leader, naming the leader it knows
of (or None) so the shell can forward the request. `TransferInProgress` is a
`NotLeader`: a leader handing over its leadership takes no proposals, and a shell
that already retries on `NotLeader` needs nothing more for it.

The membership errors say whether to retry: `ConfChangeInProgress` is temporary (a
change is already under way, or the new leader has not committed its first entry:
retry later), `InvalidConfChange` never succeeds as asked (adding a member twice,
promoting a voter, removing a stranger or the last voter).

`RaftInvariantError` means the core found a state that Raft says can never happen
(a term going down, a committed entry about to be truncated). It is raised by
`check`, never by a bare `assert`, so the checks stay on under `python -O`.
"""

from __future__ import annotations

from typing import Literal, TypeVar

T = TypeVar("T")


class NotLeader(Exception):  # noqa: N818 (the public name other modules code against)
    """This node cannot serve the request; `leader_id` is the leader it knows of."""

    def __init__(self, leader_id: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader_id})")
        self.leader_id = leader_id


class TransferInProgress(NotLeader):
    """The leader is handing leadership to `target`; proposals wait for the new leader."""

    def __init__(self, target: str) -> None:
        super().__init__(None)
        self.args = (f"leadership is being transferred to {target}",)
        self.target = target


ConfChangeReason = Literal["config_uncommitted", "term_uncommitted"]
InvalidReason = Literal[
    "already_member", "not_learner", "not_member", "last_voter", "bad_node_id", "not_voter"
]


class ConfChangeInProgress(Exception):  # noqa: N818 (a condition to retry on, not a fault)
    """A membership change cannot start yet; retry once the log has caught up.

    `config_uncommitted`: an earlier configuration entry is not committed (one change at
    a time, Raft thesis 4.1). `term_uncommitted`: this leader has not committed an entry
    of its own term yet (the fix to single-server changes in the thesis's errata).
    """

    def __init__(self, reason: ConfChangeReason) -> None:
        super().__init__(f"membership change refused for now: {reason.replace('_', ' ')}")
        self.reason = reason


class InvalidConfChange(ValueError):  # noqa: N818 (the public name other modules code against)
    """The change makes no sense against the current configuration; `reason` says why."""

    def __init__(self, reason: InvalidReason, node_id: str) -> None:
        super().__init__(f"{reason.replace('_', ' ')}: {node_id!r}")
        self.reason = reason
        self.node_id = node_id


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
