"""Pure functions that turn a key's record into the plan of the transaction starting on it.

Reads pick a supplier so that data comes from a cache when one can serve it: the M/E owner
(which drops to S, writing back first if in M), else the first sharer in name order
(deterministic), else memory. The requester ends in E only when no other copy exists.
During the grace period of a new home, which cannot know what copies its predecessor
granted, a read is served from memory without granting a copy (requester state I):
granting one beside an exclusive copy it does not know would break the one-owner rule,
and the reader loses only caching, not correctness. The same holds when an exclusive
supplier does not answer (`Directory.supplier_failed`).

Writes invalidate every other copy (and the writer's own, unless it dropped exactly the
copy the home recorded for it) and may complete once each has acknowledged or its lease
has run out (`wait_until`), and not before the grace period ends.
"""

from __future__ import annotations

from distcluster_worker.coherence.plans import Plan, TxnKind
from distcluster_worker.coherence.records import KeyRecord, Txn
from distcluster_worker.coherence.states import MesiState


def read_plan(rec: KeyRecord, txn: Txn, now: int, grace_until: int) -> Plan:
    others = {n: c for n, c in rec.copies.items() if n != txn.node}
    base = Plan(txn.txn_id, txn.key, txn.node, TxnKind.READ, MesiState.I, rec.version)
    if now < grace_until:
        return base
    owner = next((n for n in sorted(others) if others[n].state.exclusive), None)
    if owner is not None:
        write_back = owner if others[owner].state is MesiState.M else None
        return Plan(
            txn.txn_id,
            txn.key,
            txn.node,
            TxnKind.READ,
            MesiState.S,
            rec.version,
            supplier=owner,
            write_back=write_back,
            downgrade=frozenset({owner}),
        )
    if others:
        supplier = min(others)
        return Plan(txn.txn_id, txn.key, txn.node, TxnKind.READ, MesiState.S, rec.version, supplier)
    return Plan(txn.txn_id, txn.key, txn.node, TxnKind.READ, MesiState.E, rec.version)


def write_plan(rec: KeyRecord, txn: Txn, grace_until: int) -> Plan:
    """The plan of a write or delete; the caller records `issued` and the txn's waits.

    The writer's own copy is a target too unless it is the one the writer said it dropped
    (`Txn.dropped`): see `Directory.request_write`.
    """
    waits = {
        n: c.lease_until for n, c in rec.copies.items() if n != txn.node or c.grant != txn.dropped
    }
    wait_until = max([*waits.values(), grace_until])
    state = MesiState.M if txn.kind is TxnKind.WRITE else MesiState.I
    return Plan(
        txn.txn_id,
        txn.key,
        txn.node,
        txn.kind,
        state,
        rec.issued + 1,
        invalidate=frozenset(waits),
        wait_until=wait_until,
    )
