"""Membership of the queue role: a pure heartbeat failure detector for the live node set.

The shell reports heartbeats and ticks with times in milliseconds; the core returns the
changes (joined, left, ...) from which the shell rebuilds its hash ring. See
`detector.py` for the states, the timing bounds and the reasoning.
"""

from distcluster_worker.membership.detector import NO_CHANGES, Changes, Membership, MemberState
from distcluster_worker.membership.errors import MembershipInvariantError

__all__ = [
    "NO_CHANGES",
    "Changes",
    "MemberState",
    "Membership",
    "MembershipInvariantError",
]
