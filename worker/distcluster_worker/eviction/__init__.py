"""Cache lines and their eviction (LRU, or LFU with ageing), pure and deterministic.

The store never reads a clock and never draws random numbers: recency is the order of
calls, and LFU ageing runs every N accesses or when the shell calls `decay` on its own
logical-time schedule. Evicted lines in M come back to the caller for a write-back.
"""

from distcluster_worker.eviction.errors import EvictionInvariantError, LineTooLargeError, require
from distcluster_worker.eviction.line import Line
from distcluster_worker.eviction.policies import LfuPolicy, LruPolicy, Policy
from distcluster_worker.eviction.store import (
    DEFAULT_LFU_DECAY_EVERY,
    LineStore,
    PolicyName,
    StoreStats,
)

__all__ = [
    "DEFAULT_LFU_DECAY_EVERY",
    "EvictionInvariantError",
    "LfuPolicy",
    "Line",
    "LineStore",
    "LineTooLargeError",
    "LruPolicy",
    "Policy",
    "PolicyName",
    "StoreStats",
    "require",
]
