"""Consistent hashing with virtual nodes: which member owns a topic.

Each member is placed on a 64-bit circle at `vnodes` pseudo-random points (see
`hashing.py`); a key belongs to the first point at or clockwise after its own point.
This gives the two properties the queue needs:

* Movement is minimal. Adding a member only inserts its points, so a key moves only if
  one of the new points lands between the key and its old owner's point: keys move to
  the new member and nowhere else. Removing a member only deletes its points, so only
  its keys move (each to the next point clockwise). No other assignment ever changes.
* Load is even. A member's share of the circle is the sum of `vnodes` arcs; its relative
  spread is about `1/sqrt(vnodes)`. With the default of 1024 points per member the
  spread is about 3%, so the most loaded of a few members stays well under 1.15x the
  mean (256 points, a common default, exceeds that for a few percent of member sets).

The answer is a pure function of the member set: it does not depend on the order of
adds and removes. Two points that collide (vanishingly rare at 64 bits) are ordered by
member name, so every node still agrees on the owner.

Lookups are a binary search over a sorted array, O(log(members * vnodes)); edits rebuild
the array, which is cheap at cluster sizes (a few thousand points) and keeps lookups
allocation-free.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from distcluster_worker.ring.errors import (
    DuplicateMemberError,
    EmptyRingError,
    UnknownMemberError,
    require,
)
from distcluster_worker.ring.hashing import RING_SIZE, key_point, vnode_point

#: Virtual nodes per member unless told otherwise (see the module docstring for why).
DEFAULT_VNODES = 1024


class HashRing:
    """A consistent-hash ring over named members; pure and deterministic."""

    def __init__(self, members: Iterable[str] = (), *, vnodes: int = DEFAULT_VNODES) -> None:
        if isinstance(vnodes, bool) or not isinstance(vnodes, int) or vnodes < 1:
            raise ValueError(f"vnodes must be a positive integer, got {vnodes!r}")
        self._vnodes = vnodes
        self._points_of: dict[str, tuple[int, ...]] = {}
        self._points: list[int] = []
        self._owners: list[str] = []
        for member in members:
            self._place(member)
        self._rebuild()

    # -- edits -------------------------------------------------------------------------

    def add(self, member: str) -> None:
        """Put `member` on the ring; raises DuplicateMemberError if it is already there."""
        self._place(member)
        self._rebuild()

    def remove(self, member: str) -> None:
        """Take `member` off the ring; raises UnknownMemberError if it is not there."""
        if member not in self._points_of:
            raise UnknownMemberError(member)
        del self._points_of[member]
        self._rebuild()

    def copy(self) -> HashRing:
        """An independent ring with the same members and vnodes (cheap: no rehashing)."""
        twin = HashRing(vnodes=self._vnodes)
        twin._points_of = dict(self._points_of)
        twin._points = list(self._points)
        twin._owners = list(self._owners)
        return twin

    # -- lookups -----------------------------------------------------------------------

    @property
    def members(self) -> tuple[str, ...]:
        """The members, sorted by name."""
        return tuple(sorted(self._points_of))

    @property
    def vnodes(self) -> int:
        """Virtual nodes per member."""
        return self._vnodes

    def __len__(self) -> int:
        return len(self._points_of)

    def __contains__(self, member: object) -> bool:
        return member in self._points_of

    def owner(self, key: str) -> str:
        """The member that owns `key`; raises EmptyRingError on an empty ring."""
        return self._owners[self._first_index(key)]

    def owners(self, key: str, n: int) -> list[str]:
        """Up to `n` distinct members in ring order from `key`: the owner, then fallbacks.

        Returns fewer than `n` only when the ring has fewer members. The first element
        is always `owner(key)`.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        start = self._first_index(key)
        wanted = min(n, len(self._points_of))
        found: list[str] = []
        total = len(self._owners)
        for step in range(total):
            member = self._owners[(start + step) % total]
            if member not in found:
                found.append(member)
                if len(found) == wanted:
                    break
        return found

    def vnode_points(self, member: str) -> list[int]:
        """The sorted points of `member`'s virtual nodes."""
        if member not in self._points_of:
            raise UnknownMemberError(member)
        return list(self._points_of[member])

    def shares(self) -> dict[str, float]:
        """Each member's exact fraction of the key space (they sum to 1 when non-empty)."""
        arcs = dict.fromkeys(self._points_of, 0)
        if self._points:
            previous = self._points[-1] - RING_SIZE
            for point, member in zip(self._points, self._owners, strict=True):
                arcs[member] += point - previous
                previous = point
        return {member: arcs[member] / RING_SIZE for member in sorted(arcs)}

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary for `GET /ring`."""
        return {
            "members": list(self.members),
            "vnodes_per_member": self._vnodes,
            "points": len(self._points),
            "share": self.shares(),
        }

    def check(self) -> None:
        """Raise RingInvariantError if the point array disagrees with the member table."""
        require(len(self._points) == len(self._owners), "points and owners differ in length")
        require(
            len(self._points) == self._vnodes * len(self._points_of),
            "point count is not vnodes times members",
        )
        entries = list(zip(self._points, self._owners, strict=True))
        require(entries == sorted(entries), "points are not sorted by (point, member)")
        require(set(self._owners) == set(self._points_of), "owners and members differ")
        require(all(0 <= p < RING_SIZE for p in self._points), "a point is off the ring")

    # -- internals ---------------------------------------------------------------------

    def _place(self, member: str) -> None:
        if not isinstance(member, str) or not member:
            raise ValueError(f"a member must be a non-empty string, got {member!r}")
        if member in self._points_of:
            raise DuplicateMemberError(member)
        points = sorted(vnode_point(member, i) for i in range(self._vnodes))
        self._points_of[member] = tuple(points)

    def _rebuild(self) -> None:
        # Sorting by (point, member) makes the array a function of the member set alone,
        # and orders colliding points by name, so the owner of a key never depends on
        # the order in which members were added.
        entries = sorted(
            (point, member) for member, points in self._points_of.items() for point in points
        )
        self._points = [point for point, _ in entries]
        self._owners = [member for _, member in entries]
        self.check()

    def _first_index(self, key: str) -> int:
        if not self._points:
            raise EmptyRingError("the ring has no members")
        index = bisect_left(self._points, key_point(key))
        return 0 if index == len(self._points) else index
