"""MESI coherence, pure: the line state machine, the home-node directory and the node side.

`protocol.transition` is what one node does with its own copy of a key; `Directory` is what
the key's home does to order transactions and track copies; `CopyTable` is what a node
knows of its own copies (grants, how long it may serve them, fences against late replies,
renewals). None does I/O or reads a clock: the shell passes logical time in and carries
out the returned plans.
"""

from distcluster_worker.coherence.copies import CopyTable, Held, Renewal, Ticket
from distcluster_worker.coherence.directory import Directory
from distcluster_worker.coherence.errors import (
    CoherenceInvariantError,
    NotReadyError,
    UnknownTransactionError,
    require,
)
from distcluster_worker.coherence.fences import Fences, Grant
from distcluster_worker.coherence.plans import Completed, Plan, Queued, TxnKind
from distcluster_worker.coherence.protocol import TABLE, Transition, transition
from distcluster_worker.coherence.slots import (
    SLOTS,
    Answer,
    Changes,
    InMemorySlots,
    Outcome,
    Round,
    SlotTable,
    slot_name,
    slot_of,
    wanted_slots,
)
from distcluster_worker.coherence.states import Action, Event, MesiState

__all__ = [
    "SLOTS",
    "TABLE",
    "Answer",
    "Changes",
    "Action",
    "CoherenceInvariantError",
    "Completed",
    "CopyTable",
    "Directory",
    "Event",
    "Fences",
    "Grant",
    "Held",
    "InMemorySlots",
    "MesiState",
    "NotReadyError",
    "Outcome",
    "Plan",
    "Queued",
    "Renewal",
    "Round",
    "SlotTable",
    "Ticket",
    "Transition",
    "TxnKind",
    "UnknownTransactionError",
    "require",
    "slot_name",
    "slot_of",
    "transition",
    "wanted_slots",
]
