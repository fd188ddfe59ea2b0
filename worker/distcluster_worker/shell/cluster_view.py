"""This node's view of the queue cluster: the failure detector and the ring built from it.

Wraps the pure ``Membership`` and ``HashRing`` cores; the node feeds it heartbeats, failed
sends and ticks with times from the event loop's monotonic clock (in ms), and asks it who
owns a topic. The ring is rebuilt only when the live set changes (a member joined or
left); suspects stay on the ring, as the detector's docstring explains.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from distcluster_worker.membership import Changes, Membership
from distcluster_worker.ring import HashRing
from distcluster_worker.shell.discovery import Diff


class MembershipSettings(Protocol):
    """The failure-detector and ring settings a role reads (`QUEUE_*`, `CACHE_*`)."""

    @property
    def vnodes(self) -> int: ...

    @property
    def suspect_after_ms(self) -> int: ...

    @property
    def dead_after_ms(self) -> int: ...


class ClusterView:
    """Membership plus the ring of live members."""

    def __init__(
        self,
        self_id: str,
        peers: list[str],
        *,
        vnodes: int,
        suspect_after_ms: int,
        dead_after_ms: int,
    ) -> None:
        self.self_id = self_id
        self.membership = Membership(
            self_id, peers, suspect_after_ms=suspect_after_ms, dead_after_ms=dead_after_ms
        )
        self._vnodes = vnodes
        self.ring = HashRing(self.membership.live(), vnodes=vnodes)

    @classmethod
    def for_peers(
        cls, self_id: str, peers: Iterable[str], settings: MembershipSettings
    ) -> ClusterView:
        return cls(
            self_id,
            sorted(peers),
            vnodes=settings.vnodes,
            suspect_after_ms=settings.suspect_after_ms,
            dead_after_ms=settings.dead_after_ms,
        )

    def heard(self, member: str, now_ms: int, incarnation: int | None) -> Changes:
        return self._apply(self.membership.heartbeat(member, now_ms, incarnation))

    def unreachable(self, member: str, now_ms: int) -> Changes:
        return self._apply(self.membership.report_unreachable(member, now_ms))

    def add(self, member: str, now_ms: int) -> Changes:
        """A member learned at run time (discovery); it joins when first heard."""
        return self._apply(self.membership.add(member, now_ms))

    def forget(self, member: str, now_ms: int) -> Changes:
        """A member that left the cluster for good (gone from discovery)."""
        return self._apply(self.membership.forget(member, now_ms))

    def discovered(self, change: Diff, now_ms: int) -> Changes:
        """Apply what discovery found: new members tracked, departed ones forgotten."""
        for member in change.added:
            self.add(member, now_ms)
        left = [self.forget(member, now_ms).left for member in change.gone]
        return Changes(left=tuple(sorted(m for names in left for m in names)))

    def tick(self, now_ms: int) -> Changes:
        return self._apply(self.membership.tick(now_ms))

    def _apply(self, changes: Changes) -> Changes:
        if changes.ring_changed:
            self.ring = HashRing(self.membership.live(), vnodes=self._vnodes)
        return changes

    def owner(self, topic: str) -> str:
        return self.ring.owner(topic)

    def states(self) -> dict[str, str]:
        return {m: self.membership.state(m).value for m in self.membership.members}

    def describe(self) -> dict[str, Any]:
        ring = self.ring.describe()
        return {
            "node_id": self.self_id,
            "members": ring["members"],
            "configured": list(self.membership.members),
            "states": self.states(),
            "vnodes_per_member": ring["vnodes_per_member"],
            "points": ring["points"],
            "share": ring["share"],
        }
