"""What the directory tells the shell: plans of started transactions and their completions.

A request either starts at once (`Plan`) or waits behind the key's running transaction
(`Queued`); a queued request's `Plan` is returned later by whichever call finished the
transaction ahead of it (`complete` or `abort`), so the home's shell must route
it to the requesting node. A plan is computed when the transaction starts, never when it
was queued, because the copies may have changed in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from distcluster_worker.coherence.states import MesiState


class TxnKind(StrEnum):
    READ = "read"
    WRITE = "write"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Queued:
    """The request waits behind another transaction on the same key."""

    txn_id: int
    key: str
    node: str
    kind: TxnKind


@dataclass(frozen=True, slots=True)
class Plan:
    """A started transaction: what every party must do before `complete(txn_id)`.

    Reads: fetch from `supplier` (a peer) or from memory when it is None; `write_back` names
    the M holder that writes back first; `downgrade` the former M/E holder that becomes S.
    `requester_state` is I for an uncached read (during a home's grace period, or when an
    exclusive supplier did not answer: it may still hold its copy until its lease ends,
    so no new copy may be granted beside it).
    Writes and deletes: send `bus_invalidate` to every node in `invalidate`; the write may
    complete once each has acknowledged (`ack_invalidate`) or `wait_until` has passed, which
    is when the last lease among them runs out (or the grace period ends). Only then may the
    shell write memory. `version` is what a read returns or the version a write creates.
    """

    txn_id: int
    key: str
    node: str
    kind: TxnKind
    requester_state: MesiState
    version: int
    supplier: str | None = None
    write_back: str | None = None
    downgrade: frozenset[str] = field(default_factory=frozenset)
    invalidate: frozenset[str] = field(default_factory=frozenset)
    wait_until: int = 0


@dataclass(frozen=True, slots=True)
class Completed:
    """A finished transaction: the requester's copy and the next plan on the key, if any.

    `grant` identifies the copy: eviction notices carry it so a late notice about an old
    copy cannot erase a newer one. `lease_until` is 0 when no copy was granted (state I).
    """

    txn_id: int
    key: str
    node: str
    state: MesiState
    version: int
    lease_until: int
    grant: int
    started: Plan | None = None
