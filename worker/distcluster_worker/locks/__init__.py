"""Lock table: the replicated state machine of the lock manager, pure and deterministic."""

from distcluster_worker.locks.errors import LockInvariantError, LockSnapshotError
from distcluster_worker.locks.outcomes import (
    EXCLUSIVE,
    SHARED,
    Cancelled,
    Expired,
    Granted,
    Mode,
    Outcome,
    Queued,
    RefusalCode,
    Refused,
    Released,
    Renewed,
    outcome_from_dict,
)
from distcluster_worker.locks.table import LockTable

__all__ = [
    "EXCLUSIVE",
    "SHARED",
    "Cancelled",
    "Expired",
    "Granted",
    "LockInvariantError",
    "LockSnapshotError",
    "LockTable",
    "Mode",
    "Outcome",
    "Queued",
    "RefusalCode",
    "Refused",
    "Released",
    "Renewed",
    "outcome_from_dict",
]
