"""The rules a directory must satisfy after every operation, checked with `require`.

* Exclusivity: per key at most one copy in M or E, and then no other copy (no S beside an
  owner). Copies are never recorded in I: a dropped copy is removed.
* Versions: the last completed version is at most the highest issued one; a running write
  carries a version above the completed one (so completing it strictly increases it).
* Transactions: the running one and the queued ones belong to their key and are registered;
  every registered transaction is running or queued somewhere; only a running write waits
  (on other nodes' copies, and on its writer's own when that may be a newer one).
"""

from __future__ import annotations

from collections.abc import Mapping

from distcluster_worker.coherence.errors import require
from distcluster_worker.coherence.records import KeyRecord, Txn
from distcluster_worker.coherence.states import MesiState


def check_record(key: str, rec: KeyRecord) -> None:
    exclusive = [n for n, c in rec.copies.items() if c.state.exclusive]
    require(len(exclusive) <= 1, f"{key!r}: several M/E holders {sorted(exclusive)}")
    if exclusive:
        require(len(rec.copies) == 1, f"{key!r}: S copies beside the owner {exclusive[0]}")
    for node, copy in rec.copies.items():
        require(copy.state is not MesiState.I, f"{key!r}: copy of {node} recorded in I")
    require(0 <= rec.version <= rec.issued, f"{key!r}: version {rec.version} not issued")
    txn = rec.active
    if txn is not None:
        require(txn.key == key and txn.plan is not None, f"{key!r}: foreign or unplanned txn")
        if txn.is_write and txn.plan is not None:
            require(txn.plan.version > rec.version, f"{key!r}: running write's version is old")
    else:
        require(not rec.queue, f"{key!r}: a queue without a running transaction")
    for queued in rec.queue:
        require(queued.key == key and queued.plan is None, f"{key!r}: bad queued txn")


def check_key(key: str, rec: KeyRecord, txns: Mapping[int, Txn]) -> list[int]:
    """One key's rules, and that its transactions are registered; returns their ids."""
    check_record(key, rec)
    live = ([rec.active] if rec.active is not None else []) + list(rec.queue)
    for txn in live:
        require(txns.get(txn.txn_id) is txn, f"txn {txn.txn_id} is not registered")
    for txn in rec.queue:
        require(not txn.waits, f"queued txn {txn.txn_id} waits on copies")
    return [txn.txn_id for txn in live]


def check_directory(keys: Mapping[str, KeyRecord], txns: Mapping[int, Txn]) -> None:
    seen: set[int] = set()
    for key in sorted(keys):
        for txn_id in check_key(key, keys[key], txns):
            require(txn_id not in seen, f"txn {txn_id} appears twice")
            seen.add(txn_id)
    require(seen == set(txns), f"registered txns not on any key: {sorted(set(txns) - seen)}")
