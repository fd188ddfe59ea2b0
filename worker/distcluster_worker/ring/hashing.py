"""The stable hash behind the ring: the same 64-bit point in every process, forever.

Python's built-in `hash()` is salted per process (`PYTHONHASHSEED`), so two nodes would
place topics differently; it is never used here. Points come from BLAKE2b with an 8-byte
digest read big-endian, which is fast in CPython (C implementation), well mixed, and
fixed by RFC 7693.

Keys and virtual nodes are hashed in separate domains (BLAKE2b's `person` parameter), and
a virtual node label is length-prefixed (`len(member) || member || index`), so no member
name, however chosen, can collide with another member's label by construction.

These functions are a wire contract: every node of a cluster must compute the same
points, so changing them (or the encoding) moves almost every topic at once during a
rolling upgrade. The golden values in the unit tests pin them.
"""

from __future__ import annotations

import hashlib

#: Size of the hash space; points are integers in [0, RING_SIZE).
RING_SIZE = 1 << 64

_KEY_DOMAIN = b"dc-ring-key"
_VNODE_DOMAIN = b"dc-ring-vnode"


def _point(data: bytes, domain: bytes) -> int:
    digest = hashlib.blake2b(data, digest_size=8, person=domain).digest()
    return int.from_bytes(digest, "big")


def key_point(key: str) -> int:
    """The point of a key (a topic name) on the ring."""
    return _point(key.encode("utf-8"), _KEY_DOMAIN)


def vnode_point(member: str, index: int) -> int:
    """The point of `member`'s virtual node number `index` (0-based)."""
    name = member.encode("utf-8")
    label = len(name).to_bytes(4, "big") + name + index.to_bytes(4, "big")
    return _point(label, _VNODE_DOMAIN)
