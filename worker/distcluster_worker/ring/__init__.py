"""Consistent-hash ring of the queue role: topic -> owning node, pure and deterministic.

No I/O, no clock, no randomness: the same member set gives the same owners in every
process. See `hashring.py` for the reasoning and `hashing.py` for the stable hash.
"""

from distcluster_worker.ring.errors import (
    DuplicateMemberError,
    EmptyRingError,
    RingError,
    RingInvariantError,
    UnknownMemberError,
)
from distcluster_worker.ring.hashing import RING_SIZE, key_point, vnode_point
from distcluster_worker.ring.hashring import DEFAULT_VNODES, HashRing
from distcluster_worker.ring.movement import moved_keys

__all__ = [
    "DEFAULT_VNODES",
    "RING_SIZE",
    "DuplicateMemberError",
    "EmptyRingError",
    "HashRing",
    "RingError",
    "RingInvariantError",
    "UnknownMemberError",
    "key_point",
    "moved_keys",
    "vnode_point",
]
