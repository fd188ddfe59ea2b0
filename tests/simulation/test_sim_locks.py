"""The lock table replicated by Raft: lock-heavy sweeps, scenarios, checker checks.

Lock-heavy seeds start at `LOCK_SEED_BASE` (two resources, five owners, more traffic), so
a failing one replays like any other: `SIM_SEED=<seed> pytest tests/simulation -k replay`.
On every applied entry the reference table checks its own invariants, an independent
model rebuilt from outcomes checks exclusion, fencing tokens and lease expiry, and every
replica's outcomes and table text must match the reference.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from simcheck import HolderModel, LockReference, SimInvariantError
from simcluster import new_table
from simharness import LOCK_SEED_BASE, SimFailureError, run_many, run_seed
from simscenario import (
    acquire,
    calm_cluster,
    commit,
    outcome_of,
    propose_on,
    release,
    run_until,
    wait_for_leader,
)
from simsettings import sim_lock_seeds, sim_seed_base, sim_workers, sweep_timeout_s
from simworkload import LockClients

from distcluster_worker.locks import Expired, Granted, LockTable, Outcome, Queued, Refused

LOCK_SEEDS = sim_lock_seeds()
ELECTION_TICKS = 10

# -- sweep ----------------------------------------------------------------------------------


@pytest.mark.timeout(sweep_timeout_s(LOCK_SEEDS))
@pytest.mark.parametrize("size", [3, 5])
def test_lock_heavy_seeds(size: int, sweep_log: list[tuple[str, Counter[str]]]) -> None:
    parity = 0 if size == 3 else 1
    base = LOCK_SEED_BASE + sim_seed_base()
    seeds = [s for s in range(base, base + LOCK_SEEDS) if s % 2 == parity]
    sweep = run_many(seeds, sim_workers())
    sweep_log.append((f"lock sweep, {size} nodes, {len(seeds)} seeds", sweep.totals))
    assert not sweep.failures, sweep.summary()


# -- scenarios ------------------------------------------------------------------------------


def test_minority_side_grants_nothing() -> None:
    cluster = calm_cluster(size=5)
    old = wait_for_leader(cluster)
    follower = next(n for n in cluster.ids if n != old)
    cluster.net.split({old, follower})

    stranded = propose_on(cluster, old, acquire("x", "o-minority"))
    new = wait_for_leader(cluster, set(cluster.ids) - {old, follower})
    granted = commit(cluster, acquire("x", "o-majority"))
    assert isinstance(granted, Granted)

    cluster.heal()
    cluster.run(3 * ELECTION_TICKS)
    assert outcome_of(cluster, stranded) is None
    assert cluster.leader() == new
    assert cluster.locks.model.holders("x") == {"o-majority": ("exclusive", granted.token)}
    cluster.check_tables()


def test_expired_lease_is_taken_away_by_the_leaders_expire_command() -> None:
    cluster = calm_cluster(size=3)
    clients = LockClients(random.Random(1))
    first = commit(cluster, acquire("lease", "o1", ttl_ms=100))
    assert isinstance(first, Granted)

    def expired() -> bool:
        clients.propose_expiries(cluster)
        return any(
            isinstance(o, Expired) and o.token == first.token
            for outcomes in cluster.locks.outcomes.values()
            for o in outcomes
        )

    run_until(cluster, expired, 30, "the lease expired")
    second = commit(cluster, acquire("lease", "o2"))
    assert isinstance(second, Granted) and second.token > first.token


def test_fencing_tokens_increase_across_a_leader_change() -> None:
    cluster = calm_cluster(size=3)
    first = commit(cluster, acquire("fenced", "o1"))
    commit(cluster, release("fenced", "o1", first.token))

    old = wait_for_leader(cluster)
    cluster.net.isolate(old)
    wait_for_leader(cluster, set(cluster.ids) - {old})
    second = commit(cluster, acquire("fenced", "o2"))
    assert isinstance(second, Granted) and second.token > first.token

    cluster.heal()
    stale = commit(cluster, release("fenced", "o1", first.token))
    assert isinstance(stale, Refused) and stale.code == "not_holder"


def test_deadlock_is_refused_through_raft() -> None:
    cluster = calm_cluster(size=3)
    commit(cluster, acquire("a", "o1"))
    commit(cluster, acquire("b", "o2"))
    queued = commit(cluster, acquire("b", "o1", wait_ms=60_000))
    assert isinstance(queued, Queued)

    refused = commit(cluster, acquire("a", "o2", wait_ms=60_000))
    assert isinstance(refused, Refused) and refused.code == "deadlock"
    assert {"o1", "o2"} <= set(refused.cycle)


def test_waiters_and_leases_reach_a_lagging_node_through_a_snapshot() -> None:
    cluster = calm_cluster(size=3, snapshot_entries=4)
    leader = wait_for_leader(cluster)
    lagging = next(n for n in cluster.ids if n != leader)
    cluster.crash(lagging)

    held = commit(cluster, acquire("q", "o1"))
    for owner in ("o2", "o3", "o4"):
        assert isinstance(commit(cluster, acquire("q", owner, "shared", wait_ms=60_000)), Queued)
    for i in range(6):
        commit(cluster, acquire(f"other{i}", "o5", ttl_ms=60_000))
    cluster.start(lagging)
    run_until(
        cluster,
        lambda: cluster.nodes[lagging].applied == cluster.locks.applied,
        10 * ELECTION_TICKS,
        "the lagging node caught up",
    )
    assert cluster.nodes[lagging].storage.snapshot is not None
    cluster.check_tables()

    commit(cluster, release("q", "o1", held.token))
    cluster.run(3)
    assert set(cluster.locks.model.holders("q")) == {"o2", "o3", "o4"}
    cluster.check_tables()


# -- the checkers can fail ------------------------------------------------------------------


def granted(index: int, owner: str, mode: str = "exclusive", expires: int = 10_000) -> Granted:
    return Granted(f"r-{index}-{owner}", "res", owner, mode, index, expires)  # type: ignore[arg-type]


def command(now_ms: int = 0) -> dict[str, Any]:
    return {"op": "acquire", "resource": "res", "now_ms": now_ms}


def test_model_rejects_two_exclusive_holders() -> None:
    model = HolderModel()
    model.on_outcomes(3, command(), [granted(3, "o1")])
    with pytest.raises(SimInvariantError, match="lock exclusion"):
        model.on_outcomes(4, command(), [granted(4, "o2")])


def test_model_rejects_exclusive_beside_shared() -> None:
    model = HolderModel()
    model.on_outcomes(3, command(), [granted(3, "o1", "shared"), granted(3, "o2", "shared")])
    with pytest.raises(SimInvariantError, match="lock exclusion"):
        model.on_outcomes(4, command(), [granted(4, "o3")])


def test_model_rejects_a_token_that_does_not_increase() -> None:
    model = HolderModel()
    model.on_outcomes(5, command(), [granted(5, "o1")])
    model.holds["res"].clear()  # as if released
    with pytest.raises(SimInvariantError, match="fencing tokens increase|granting index"):
        model.on_outcomes(6, command(), [granted(5, "o2")])


def test_model_rejects_a_lease_kept_past_its_expiry() -> None:
    model = HolderModel()
    model.on_outcomes(2, command(now_ms=0), [granted(2, "o1", expires=100)])
    with pytest.raises(SimInvariantError, match="expired lease kept"):
        model.on_outcomes(3, {"op": "expire", "now_ms": 150}, [])


class DoubleGrantingTable(LockTable):
    """A broken table: every grant is also handed to a phantom owner."""

    def apply(self, index: int, command: Mapping[str, Any]) -> list[Outcome]:
        outcomes = super().apply(index, command)
        ghosts = [
            Granted("ghost", o.resource, "ghost", "exclusive", o.token, o.expires_at_ms)
            for o in outcomes
            if isinstance(o, Granted)
        ]
        return outcomes + ghosts


def test_reference_catches_a_table_that_grants_twice() -> None:
    reference = LockReference(DoubleGrantingTable, LockTable.restore)
    entry = (
        1,
        "command",
        '{"op": "acquire", "request_id": "q1", "resource": "r", '
        '"owner": "o1", "mode": "exclusive", "ttl_ms": 100, "wait_ms": 0, "now_ms": 0}',
    )
    with pytest.raises(SimInvariantError, match="lock exclusion"):
        reference.catch_up({1: entry})


def test_reference_catches_a_diverged_replica() -> None:
    reference = LockReference(new_table, LockTable.restore)
    with pytest.raises(SimInvariantError, match="replica diverged"):
        reference.expect_table("n1", 0, LockTable().snapshot() + " ")


def test_simulator_catches_a_table_that_ignores_holders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break the table in memory, with its own invariant checks off: the model must notice."""
    if not hasattr(LockTable, "_grantable_now"):
        pytest.skip("LockTable._grantable_now is gone: update this mutant")
    monkeypatch.setattr(LockTable, "_grantable_now", staticmethod(lambda res, owner, mode: True))
    monkeypatch.setattr(LockTable, "check_invariants", lambda self: None)
    with pytest.raises(SimFailureError) as failure:
        run_seed(LOCK_SEED_BASE)
    assert failure.value.invariant == "lock exclusion"
