"""Cluster membership for the Raft core: who votes, who only listens, and how it changes.

Changes are single-server (Raft thesis, chapter 4): each configuration differs from
the one before by one server, so any majority of the old one overlaps any majority of
the new one and no two leaders can be elected in one term across a change. A new
server first joins as a *learner* (etcd's name): it receives the log and snapshots
but neither votes nor counts towards a commit, so a slow newcomer cannot stall the
cluster while it catches up. Promoting it is the change that makes it a voter.

A configuration lives in the log as an entry of kind `"config"` whose data is the
complete new `Membership` (not the delta), so a node that reads only the latest one
knows everything. A node uses the latest configuration in its log at once, committed
or not (thesis 4.1); `ConfigHistory` keeps the configuration entries after the
snapshot so truncating the log reverts the configuration without rescanning the log.

Named `confchange` so it is not confused with `distcluster_worker.membership`, the
failure detector of the queue and cache roles.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, Literal

from distcluster_worker.raft.errors import InvalidConfChange, RaftInvariantError, check

ConfChangeOp = Literal["add_learner", "promote", "remove"]


@dataclass(frozen=True, slots=True)
class Membership:
    """Voters and learners, each sorted and disjoint. No voters at all means "unknown":
    the configuration of a node that joins and has not heard from a leader yet."""

    voters: tuple[str, ...]
    learners: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for group in (self.voters, self.learners):
            if list(group) != sorted(set(group)) or not all(group):
                raise ValueError(f"members must be sorted, distinct node ids: {group}")
        if set(self.voters) & set(self.learners):
            raise ValueError("a node cannot be both voter and learner")
        if self.learners and not self.voters:
            raise ValueError("learners need at least one voter")

    @staticmethod
    def of(
        voters: tuple[str, ...] | list[str], learners: tuple[str, ...] | list[str] = ()
    ) -> Membership:
        return Membership(tuple(sorted(voters)), tuple(sorted(learners)))

    @property
    def known(self) -> bool:
        return bool(self.voters)

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(sorted(self.voters + self.learners))

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def is_voter(self, node_id: str) -> bool:
        return node_id in self.voters

    def is_learner(self, node_id: str) -> bool:
        return node_id in self.learners

    def is_member(self, node_id: str) -> bool:
        return node_id in self.voters or node_id in self.learners

    def apply(self, change: ConfChange) -> Membership:
        """The configuration after `change`; `InvalidConfChange` if it does not apply."""
        node = change.node_id
        if not isinstance(node, str) or not node:
            raise InvalidConfChange("bad_node_id", str(node))
        voters, learners = set(self.voters), set(self.learners)
        if change.op == "add_learner":
            if self.is_member(node):
                raise InvalidConfChange("already_member", node)
            learners.add(node)
        elif change.op == "promote":
            if not self.is_learner(node):
                raise InvalidConfChange("not_learner", node)
            learners.discard(node)
            voters.add(node)
        else:
            if not self.is_member(node):
                raise InvalidConfChange("not_member", node)
            if voters == {node}:
                raise InvalidConfChange("last_voter", node)
            voters.discard(node)
            learners.discard(node)
        return Membership.of(tuple(voters), tuple(learners))


NO_MEMBERSHIP = Membership(())


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One single-server change, as the shell asks for it."""

    op: ConfChangeOp
    node_id: str


# -- the entry's data -----------------------------------------------------------------


def encode_membership(membership: Membership) -> str:
    """The `data` of a config entry: canonical JSON, so equal configs are equal text."""
    body = {"voters": list(membership.voters), "learners": list(membership.learners)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def decode_membership(data: str) -> Membership:
    """Inverse of `encode_membership`; `ValueError` on anything else."""
    try:
        raw: Any = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValueError(f"config entry is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError("config entry must be an object")
    groups = [raw.get("voters"), raw.get("learners", [])]
    for group in groups:
        if not isinstance(group, list) or not all(isinstance(v, str) for v in group):
            raise ValueError("config voters and learners must be lists of node ids")
    membership = Membership.of(groups[0], groups[1])
    if not membership.known:
        raise ValueError("a config entry needs at least one voter")
    return membership


def snapshot_membership(voters: tuple[str, ...], learners: tuple[str, ...]) -> Membership | None:
    """The membership a snapshot records, or None if it records none (no voters)."""
    if not voters:
        return None
    return Membership.of(voters, learners)


# -- configurations along the log --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigPoint:
    index: int
    term: int
    membership: Membership


def _index_of(point: ConfigPoint) -> int:
    return point.index


class ConfigHistory:
    """The membership as of the snapshot, then every config entry after it, in order.

    `RaftLog` tells it about each config entry appended, each truncation and each
    snapshot, so the latest configuration is always at hand and a truncation only drops
    the points it cut. The points are few (one per change), so lists are plenty.
    """

    def __init__(self, base: Membership, base_index: int = 0) -> None:
        self._base = base
        self._base_index = base_index
        self._points: list[ConfigPoint] = []

    @property
    def latest(self) -> Membership:
        return self._points[-1].membership if self._points else self._base

    @property
    def latest_index(self) -> int:
        """Index of the latest config entry; the snapshot's index if none follows it."""
        return self._points[-1].index if self._points else self._base_index

    @property
    def points(self) -> tuple[ConfigPoint, ...]:
        return tuple(self._points)

    def as_of(self, index: int) -> Membership:
        """The configuration in force at `index` (not below the snapshot)."""
        check(index >= self._base_index, f"config at {index} is before the snapshot")
        pos = bisect_right(self._points, index, key=_index_of)
        return self._points[pos - 1].membership if pos else self._base

    def appended(self, index: int, term: int, data: str) -> None:
        check(index > self.latest_index, f"config entry {index} not after {self.latest_index}")
        try:
            membership = decode_membership(data)
        except ValueError as exc:
            raise RaftInvariantError(f"config entry {index} does not decode: {exc}") from None
        self._points.append(ConfigPoint(index, term, membership))

    def truncated_from(self, index: int) -> None:
        """Entries at and after `index` are gone: so are their configurations."""
        del self._points[bisect_right(self._points, index - 1, key=_index_of) :]

    def rebased(self, base: Membership, base_index: int, keep_after: bool) -> None:
        """A snapshot now covers up to `base_index`; points after it stay if kept."""
        kept = [p for p in self._points if p.index > base_index] if keep_after else []
        self._base, self._base_index, self._points = base, base_index, kept
