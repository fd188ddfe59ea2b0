"""Membership changes under a hostile simulated network: sweep, scenarios, checkers that bite.

The sweep runs `SIM_MEMBER_SEEDS` seeds from `MEMBER_SEED_BASE`: six nodes, three of them
the bootstrap voters, the others joining when `simmembers` adds them; the voter count
walks between two bounds (3 -> 5 -> 3 style: add a learner, wait until it caught up,
promote; remove a follower; remove the leader after handing leadership over, or without)
while crashes, torn Readys, partitions, message loss and lock traffic go on. Every Raft
and lock invariant is checked after every step, election safety over all terms and hence
across configurations, plus two of membership: a node campaigns only while its own
configuration makes it a voter, and no config entry is written after an uncommitted one.
A failure is one line naming the seed; `SIM_SEED=<seed> pytest tests/simulation -k replay`
replays it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from simcheck import RaftChecker, SimInvariantError
from simcluster import Cluster
from simharness import MEMBER_SEED_BASE, SimSpec, failure_of, run_many, run_spec
from simscenario import (
    ELECTION_STEPS,
    acquire,
    calm_cluster,
    commit,
    propose_on,
    run_until,
    terms_with_leaders,
    wait_for_leader,
)
from simsettings import sim_member_seeds, sim_seed_base, sim_workers, sweep_timeout_s

from distcluster_worker.raft.confchange import ConfChange, Membership, encode_membership
from distcluster_worker.raft.errors import ConfChangeInProgress
from distcluster_worker.raft.messages import Entry
from distcluster_worker.raft.node import RaftNode
from distcluster_worker.raft.replication import Replicator

MEMBER_SEEDS = sim_member_seeds()
ELECTION_TICKS = 10

# -- sweep ----------------------------------------------------------------------------------


@pytest.mark.timeout(sweep_timeout_s(MEMBER_SEEDS))
def test_membership_seeds(sweep_log: list[tuple[str, Counter[str]]]) -> None:
    base = MEMBER_SEED_BASE + sim_seed_base()
    sweep = run_many(range(base, base + MEMBER_SEEDS), sim_workers())
    sweep_log.append((f"membership sweep, {MEMBER_SEEDS} seeds", sweep.totals))
    assert not sweep.failures, sweep.summary()
    for done in ("conf promote", "conf remove", "transfer", "retire"):
        assert sweep.totals[done] > 0, f"the sweep never did a {done!r}"


def test_same_membership_seed_same_history() -> None:
    spec = SimSpec.from_seed(MEMBER_SEED_BASE + 7)
    assert spec.members is not None and spec.voters == 3
    assert run_spec(spec) == run_spec(spec)


# -- scenario verbs -------------------------------------------------------------------------


def leader_core(cluster: Cluster) -> RaftNode:
    return cluster.nodes[wait_for_leader(cluster)].core()


def change(cluster: Cluster, op: str, node_id: str, max_steps: int = 200) -> int:
    """Propose on the leader (retrying while the core says wait) until it is committed."""
    for _ in range(max_steps):
        leader = wait_for_leader(cluster)
        try:
            index = cluster.propose_conf_change(leader, ConfChange(op, node_id))  # type: ignore[arg-type]
        except ConfChangeInProgress:
            cluster.step()
            continue
        committed = committed_on(cluster.nodes[leader].core(), index)
        run_until(cluster, committed, max_steps, f"{op} {node_id} committed")
        return index
    raise AssertionError(f"{op} {node_id} was never accepted")


def committed_on(raft: RaftNode, index: int) -> Callable[[], bool]:
    return lambda: raft.commit_index >= index


def grow(cluster: Cluster, node_id: str) -> None:
    """Add as a learner, wait until the leader says it caught up, then promote."""
    change(cluster, "add_learner", node_id)
    run_until(
        cluster,
        lambda: leader_core(cluster).learner_caught_up(node_id),
        5 * ELECTION_TICKS,
        f"{node_id} caught up",
    )
    change(cluster, "promote", node_id)


def voters_everywhere(cluster: Cluster) -> set[tuple[str, ...]]:
    return {n.core().voters for n in cluster.live_nodes()}


# -- scenarios ------------------------------------------------------------------------------


def test_three_to_five_to_three_under_lock_traffic() -> None:
    cluster = calm_cluster(size=5, voters=3, snapshot_entries=8)
    commit(cluster, acquire("before", "o1"))
    for node_id in ("n4", "n5"):
        grow(cluster, node_id)
        commit(cluster, acquire(f"with-{node_id}", "o2"))
    cluster.run(3)
    assert voters_everywhere(cluster) == {("n1", "n2", "n3", "n4", "n5")}

    leader = wait_for_leader(cluster)
    follower = next(n for n in cluster.ids if n != leader)
    change(cluster, "remove", follower)
    cluster.retire(follower)
    target = next(n for n in cluster.ids if n not in (leader, follower))
    cluster.transfer_leadership(leader, target)
    run_until(cluster, lambda: cluster.leader() == target, ELECTION_STEPS, "handed over")
    change(cluster, "remove", leader)
    cluster.retire(leader)
    commit(cluster, acquire("after", "o3"))
    cluster.run(3)
    assert len(voters_everywhere(cluster)) == 1 and len(cluster.nodes[target].core().voters) == 3
    assert cluster.delivered_kinds.get("TimeoutNow", 0) >= 1
    cluster.check_tables()


def test_leader_removed_without_handover_steps_down_and_a_voter_takes_over() -> None:
    cluster = calm_cluster(size=3)
    commit(cluster, acquire("x", "o1"))
    old = wait_for_leader(cluster)
    old_term = cluster.nodes[old].core().term
    change(cluster, "remove", old)
    run_until(cluster, lambda: cluster.nodes[old].core().state == "follower", 5, "step down")
    new = wait_for_leader(cluster, set(cluster.ids) - {old})
    assert cluster.nodes[new].core().term > old_term
    commit(cluster, acquire("y", "o2"))
    cluster.run(10 * ELECTION_TICKS)  # the checkers see to it that `old` never campaigns
    assert cluster.leader() == new and cluster.nodes[old].core().state == "follower"


def test_removed_node_that_missed_its_removal_cannot_disrupt() -> None:
    cluster = calm_cluster(size=3)
    leader = wait_for_leader(cluster)
    stranded = next(n for n in cluster.ids if n != leader)
    cluster.net.isolate(stranded)
    change(cluster, "remove", stranded)
    term = cluster.nodes[leader].core().term
    cluster.heal()
    cluster.run(10 * ELECTION_TICKS)  # it still thinks it votes: it pre-votes, in vain
    assert cluster.nodes[stranded].core().promotable
    assert (cluster.leader(), cluster.nodes[leader].core().term) == (leader, term)


def test_learner_joins_through_a_snapshot_and_is_promoted() -> None:
    cluster = calm_cluster(size=4, voters=3, snapshot_entries=4)
    for i in range(6):
        commit(cluster, acquire(f"r{i}", "o1"))
    assert leader_core(cluster).first_index > 1
    grow(cluster, "n4")
    n4 = cluster.nodes["n4"]
    assert n4.storage.snapshot is not None and n4.core().promotable
    commit(cluster, acquire("after", "o2"))
    cluster.run(3)
    cluster.check_tables()


def test_minority_with_an_uncommitted_change_does_not_elect_a_second_leader() -> None:
    """A leader cut off right after proposing a change: both sides' terms stay single-led."""
    cluster = calm_cluster(size=5, voters=3)
    old = wait_for_leader(cluster)
    run_until(cluster, lambda: leader_core(cluster).commit_index > 0, 10, "first commit")
    cluster.net.split({old, "n4"})
    cluster.propose_conf_change(old, ConfChange("add_learner", "n4"))
    new = wait_for_leader(cluster, {"n1", "n2", "n3"} - {old})
    change(cluster, "add_learner", "n5")
    cluster.heal()
    cluster.run(5 * ELECTION_TICKS)
    assert cluster.leader() == new
    assert leader_core(cluster).membership == Membership(("n1", "n2", "n3"), ("n5",))
    assert len(set(terms_with_leaders(cluster))) == len(terms_with_leaders(cluster))


# -- the checkers can fail ----------------------------------------------------------------


def config_entry(index: int, term: int) -> Entry:
    return Entry(term, index, "config", encode_membership(Membership(("a", "b"))))


def test_checker_rejects_a_config_entry_after_an_uncommitted_one() -> None:
    checker = RaftChecker()
    checker.max_commit = 4
    checker.on_config_write("a", config_entry(6, 1), config_entry(4, 1))  # 4 is committed
    with pytest.raises(SimInvariantError, match="one uncommitted config change"):
        checker.on_config_write("a", config_entry(7, 1), config_entry(6, 1))


def test_cluster_rejects_a_campaign_by_a_node_that_is_no_voter() -> None:
    cluster = calm_cluster(size=4, voters=3)
    with pytest.raises(SimInvariantError, match="only voters campaign"):
        cluster.check_campaigner(cluster.nodes["n4"], 1, "pre-vote")


# -- the simulator catches a broken core ---------------------------------------------------
# As in test_sim_raft: each test breaks the core in memory and leans on its private names;
# when those move the test skips and asks for the mutant to be updated.


def break_core(monkeypatch: pytest.MonkeyPatch, owner: type, name: str, broken: Any) -> None:
    if not hasattr(owner, name):
        pytest.skip(f"{owner.__name__}.{name} is gone: update this mutant")
    monkeypatch.setattr(owner, name, broken)


def first_member_failure(seeds: int) -> Any:
    failures = (failure_of(SimSpec.from_seed(MEMBER_SEED_BASE + k)) for k in range(seeds))
    return next((f for f in failures if f is not None), None)


def test_sweep_catches_a_leader_that_runs_two_changes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def without_the_one_at_a_time_rule(self: Any, change: ConfChange) -> int:
        self._check_proposals_open()
        if self._log.term_at(self._log.commit) != self._term:
            raise ConfChangeInProgress("term_uncommitted")
        membership = self._log.membership.apply(change)
        index: int = self._log.last_index + 1
        self._log.append([Entry(self._term, index, "config", encode_membership(membership))])
        self._leader().set_membership(membership)
        self._leader().bcast_append()
        return index

    for name in ("_check_proposals_open", "_leader"):
        if not hasattr(RaftNode, name):
            pytest.skip(f"RaftNode.{name} is gone: update this mutant")
    break_core(monkeypatch, RaftNode, "propose_conf_change", without_the_one_at_a_time_rule)
    failure = first_member_failure(20)
    assert failure is not None, "twenty seeds should expose two changes in flight"
    assert failure.invariant == "one uncommitted config change"
    assert "\n" not in str(failure) and "replay with: SIM_SEED=" in str(failure)


def test_simulator_catches_a_learner_that_campaigns(monkeypatch: pytest.MonkeyPatch) -> None:
    def any_member(self: Any) -> bool:
        return bool(self._log.membership.is_member(self._id))

    break_core(monkeypatch, RaftNode, "promotable", property(any_member))
    cluster = calm_cluster(size=4, voters=3)
    change(cluster, "add_learner", "n4")
    learner = cluster.nodes["n4"].core()
    run_until(cluster, lambda: learner.learners == ("n4",), 10, "n4 knows it is a learner")
    cluster.net.isolate("n4")  # it stops hearing the leader, so its election timer runs
    with pytest.raises(SimInvariantError, match="only voters campaign"):
        cluster.run(5 * ELECTION_TICKS)


def test_simulator_catches_learners_counted_in_the_quorum(monkeypatch: pytest.MonkeyPatch) -> None:
    def every_member(self: Any, values: dict[str, int], own: int) -> list[int]:
        return [own, *values.values()]

    break_core(monkeypatch, Replicator, "_voter_values", every_member)
    cluster = calm_cluster(size=4, voters=3)
    change(cluster, "add_learner", "n4")
    old = wait_for_leader(cluster)
    cluster.run(3)
    cluster.net.split({old, "n4"})  # the leader keeps only the learner
    propose_on(cluster, old, acquire("split", "o1"))
    with pytest.raises(SimInvariantError, match="leader completeness|committed entry"):
        wait_for_leader(cluster, {"n1", "n2", "n3"} - {old})
        cluster.run(5 * ELECTION_TICKS)
