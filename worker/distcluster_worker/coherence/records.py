"""The directory's per-key data, with no behaviour beyond small queries.

A `KeyRecord` holds the copies the home has granted (node -> `Copy`), the last completed
write's `version`, the highest version ever handed out (`issued`), the running transaction
and the queue behind it. `issued` exists because a write that is aborted after its memory
write may or may not have landed: its version is burned, never reused, so versions in
memory only ever grow.

A copy is kept until it is invalidated, evicted or its lease runs out, whatever the
membership says: a node that looks dead may be alive behind a partition and still
answering reads, so a later write must wait for its lease like for any silent copy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from distcluster_worker.coherence.plans import Plan, TxnKind
from distcluster_worker.coherence.states import MesiState


@dataclass(slots=True)
class Copy:
    state: MesiState
    lease_until: int
    grant: int


@dataclass(slots=True)
class Txn:
    txn_id: int
    key: str
    node: str
    kind: TxnKind
    plan: Plan | None = None  # None while queued
    waits: dict[str, int] = field(default_factory=dict)  # copies to invalidate -> lease end
    dropped: int | None = None  # writes: the grant the writer dropped when it began

    @property
    def is_write(self) -> bool:
        return self.kind is not TxnKind.READ


@dataclass(slots=True)
class KeyRecord:
    copies: dict[str, Copy] = field(default_factory=dict)
    version: int = 0
    issued: int = 0
    active: Txn | None = None
    queue: deque[Txn] = field(default_factory=deque)

    def owner(self) -> str | None:
        """The node holding the line in M or E, if any."""
        for node in sorted(self.copies):
            if self.copies[node].state.exclusive:
                return node
        return None

    def purge_expired(self, now: int) -> None:
        """Forget copies whose lease has run out: their nodes no longer serve them."""
        for node in [n for n, c in self.copies.items() if c.lease_until <= now]:
            del self.copies[node]

    def idle(self) -> bool:
        return not self.copies and self.active is None and not self.queue
