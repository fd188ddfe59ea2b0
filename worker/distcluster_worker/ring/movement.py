"""Which keys change owner between two rings: the measure of a membership change.

Used by tests to prove the movement bounds, and by a shell that wants to log or hand off
the topics a join or leave moves. Pure: it only asks both rings for owners.
"""

from __future__ import annotations

from collections.abc import Iterable

from distcluster_worker.ring.hashring import HashRing


def moved_keys(
    before: HashRing, after: HashRing, keys: Iterable[str]
) -> dict[str, tuple[str, str]]:
    """Map each key whose owner differs to `(owner_before, owner_after)`.

    Both rings must have members (EmptyRingError otherwise). Keys are looked up once
    each; duplicates in `keys` collapse.
    """
    moved: dict[str, tuple[str, str]] = {}
    for key in keys:
        old, new = before.owner(key), after.owner(key)
        if old != new:
            moved[key] = (old, new)
    return moved
