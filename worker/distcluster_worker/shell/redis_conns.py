"""Redis connections a role drives itself, bounded per operation instead of per call.

The node's client carries a socket timeout, so every redis-py call is bounded. A role
that sends on connections of its own (the lock's Raft writes, the queue's lanes) makes
them without it and bounds each whole operation, send and replies, by the same timeout
in one ``asyncio.timeout``: with a socket timeout, redis-py sends through
``asyncio.wait_for``, which on Python 3.11 runs every send as a task of its own (one more
event-loop turn per operation), and arms a timer for every read.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import ConnectionPool


def unbounded_connection_settings(pool: ConnectionPool) -> tuple[dict[str, Any], float | None]:
    """The pool's connection settings without the socket timeout, and that timeout (None
    when the pool has none): the bound the caller puts on each operation itself."""
    settings = dict(pool.connection_kwargs)
    timeout_s: float | None = settings.get("socket_timeout")
    settings["socket_timeout"] = None
    return settings, timeout_s
