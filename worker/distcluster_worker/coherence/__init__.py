"""MESI coherence, pure: the line state machine and the home-node directory.

`protocol.transition` is what one node does with its own copy of a key; `Directory` is what
the key's home does to order transactions and track copies. Neither does I/O or reads a
clock: the shell passes logical time in and carries out the returned plans.
"""

from distcluster_worker.coherence.directory import Directory
from distcluster_worker.coherence.errors import (
    CoherenceInvariantError,
    NotReadyError,
    UnknownTransactionError,
    require,
)
from distcluster_worker.coherence.plans import Completed, Plan, Queued, TxnKind
from distcluster_worker.coherence.protocol import TABLE, Transition, transition
from distcluster_worker.coherence.states import Action, Event, MesiState

__all__ = [
    "TABLE",
    "Action",
    "CoherenceInvariantError",
    "Completed",
    "Directory",
    "Event",
    "MesiState",
    "NotReadyError",
    "Plan",
    "Queued",
    "Transition",
    "TxnKind",
    "UnknownTransactionError",
    "require",
    "transition",
]
