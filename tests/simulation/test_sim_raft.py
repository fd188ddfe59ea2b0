"""Raft under a hostile simulated network: seed sweeps, replays, scenarios, checker checks.

The sweep runs `SIM_SEEDS` seeds (even seeds on 3 nodes, odd seeds on 5), each with a fault
mix drawn from the seed, checkers after every step and a liveness check at the end. A
failure is one line naming the seed; `SIM_SEED=<seed> pytest tests/simulation -k replay`
replays it and prints the last events before the violation.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from simcheck import RaftChecker, SimInvariantError
from simharness import SimFailureError, SimSpec, failure_of, run_many, run_seed, run_spec
from simscenario import (
    ELECTION_STEPS,
    acquire,
    calm_cluster,
    commit,
    commit_many,
    outcome_of,
    propose_on,
    run_until,
    terms_with_leaders,
    wait_for_leader,
)
from simsettings import sim_seed, sim_seed_base, sim_seeds, sim_workers, sweep_timeout_s

from distcluster_worker.raft.log import RaftLog
from distcluster_worker.raft.messages import Entry, HardState, VoteResponse
from distcluster_worker.raft.node import RaftNode

SEEDS = sim_seeds()
ELECTION_TICKS = 10

# -- sweeps and replay ------------------------------------------------------------------------


@pytest.mark.timeout(sweep_timeout_s(SEEDS))
@pytest.mark.parametrize("size", [3, 5])
def test_random_seeds(size: int, sweep_log: list[tuple[str, Counter[str]]]) -> None:
    parity = 0 if size == 3 else 1
    base = sim_seed_base()
    seeds = [s for s in range(base, base + SEEDS) if s % 2 == parity]
    sweep = run_many(seeds, sim_workers())
    sweep_log.append((f"raft sweep, {size} nodes, {len(seeds)} seeds", sweep.totals))
    assert not sweep.failures, sweep.summary()


def test_replay_seed() -> None:
    seed = sim_seed()
    if seed is None:
        pytest.skip("set SIM_SEED=<seed> to replay one simulation run")
    failure: SimFailureError | None = None
    try:
        stats = run_seed(seed)
    except SimFailureError as exc:
        failure = exc
    if failure is not None:
        pytest.fail(f"{failure}\n{failure.trace}", pytrace=False)
    print(f"seed {seed} passed: {stats}")


def test_same_seed_same_history() -> None:
    spec = SimSpec.from_seed(12_345)
    assert run_spec(spec) == run_spec(spec)


# -- scenarios ------------------------------------------------------------------------------


def test_isolated_leader_healed_does_not_make_two_leaders_in_one_term() -> None:
    cluster = calm_cluster(size=3)
    old = wait_for_leader(cluster)
    old_term = cluster.nodes[old].core().term

    cluster.net.isolate(old)
    rest = set(cluster.ids) - {old}
    new = wait_for_leader(cluster, rest)
    new_term = cluster.nodes[new].core().term
    assert new_term > old_term

    cluster.heal()
    cluster.run(5 * ELECTION_TICKS)
    assert cluster.leaders() == [new], "the healed node must not take over or split the vote"
    assert cluster.nodes[new].core().term == new_term, "pre-vote: rejoining costs no election"
    assert cluster.nodes[old].core().state == "follower"
    assert cluster.nodes[old].core().term == new_term
    leaders = terms_with_leaders(cluster)
    assert leaders[old_term] == old and leaders[new_term] == new


def test_minority_partition_commits_nothing() -> None:
    cluster = calm_cluster(size=5)
    leader = wait_for_leader(cluster)
    commit(cluster, acquire("before", "o1"))
    cluster.run(3)  # every follower learns that commit
    follower = next(n for n in cluster.ids if n != leader)
    minority = {leader, follower}
    commit_before = {n: cluster.nodes[n].core().commit_index for n in minority}

    cluster.net.split(minority)
    stranded = [propose_on(cluster, leader, acquire(f"m{i}", "o2")) for i in range(3)]
    majority_leader = wait_for_leader(cluster, set(cluster.ids) - minority)
    commit(cluster, acquire("after", "o3"))
    cluster.run(3 * ELECTION_TICKS)

    for node_id in minority:
        assert cluster.nodes[node_id].core().commit_index == commit_before[node_id]
    assert cluster.leader() == majority_leader
    cluster.heal()
    cluster.run(3 * ELECTION_TICKS)
    assert all(outcome_of(cluster, request_id) is None for request_id in stranded)
    assert {n.applied for n in cluster.nodes.values()} == {cluster.locks.applied}
    cluster.check_tables()


def test_lagging_node_catches_up_through_a_snapshot() -> None:
    cluster = calm_cluster(size=3, snapshot_entries=4)
    leader = wait_for_leader(cluster)
    lagging = next(n for n in cluster.ids if n != leader)
    cluster.crash(lagging)

    commit_many(cluster, 10)
    assert cluster.nodes[leader].core().first_index > 1, "the leader compacted its log"
    snapshots_before = cluster.delivered_kinds.get("SnapshotRequest", 0)

    cluster.start(lagging)
    run_until(
        cluster,
        lambda: cluster.nodes[lagging].applied == cluster.locks.applied,
        10 * ELECTION_TICKS,
        "the restarted follower caught up",
    )
    assert cluster.delivered_kinds.get("SnapshotRequest", 0) > snapshots_before
    assert cluster.nodes[lagging].storage.snapshot is not None
    cluster.check_tables()


def test_leader_that_cannot_hear_steps_down_by_check_quorum() -> None:
    cluster = calm_cluster(size=3)
    deaf = wait_for_leader(cluster)
    deaf_term = cluster.nodes[deaf].core().term

    cluster.net.deafen(deaf)  # its heartbeats still arrive; no reply reaches it
    run_until(
        cluster,
        lambda: cluster.nodes[deaf].core().state != "leader",
        3 * ELECTION_TICKS,
        "the deaf leader stepped down",
    )
    new = wait_for_leader(cluster, set(cluster.ids) - {deaf})
    assert cluster.nodes[new].core().term > deaf_term
    commit(cluster, acquire("after-step-down", "o1"))


def test_whole_cluster_restart_keeps_every_committed_entry() -> None:
    cluster = calm_cluster(size=3, snapshot_entries=8)
    wait_for_leader(cluster)
    commit_many(cluster, 6)
    committed = cluster.locks.applied
    for node_id in cluster.ids:
        cluster.crash(node_id)
    for node_id in cluster.ids:
        cluster.start(node_id)
    commit(cluster, acquire("after-restart", "o1"), max_steps=80)
    assert cluster.locks.applied > committed
    cluster.run(ELECTION_TICKS)
    cluster.check_tables()


def test_figure_8_an_old_entry_is_not_committed_by_counting_replicas() -> None:
    """The Raft paper's Figure 8, staged with partitions and crashes on five nodes.

    An entry of an old term that reaches a majority must not count as committed until an
    entry of the leader's own term does; otherwise a later leader may overwrite it.
    """
    committed_early = figure_8(seed=0)
    assert not committed_early


def figure_8(seed: int) -> bool:
    """Stage Figure 8; returns whether the old-term entry was committed by counting."""
    c = calm_cluster(
        size=5,
        seed=seed,
        pre_vote=False,
        check_quorum=False,
        max_entries_per_append=1,
        max_inflight_appends=1,
    )
    s1 = wait_for_leader(c)
    commit(c, acquire("a", "o1"))
    c.run(3)
    f = next(n for n in c.ids if n != s1)
    rest = [n for n in c.ids if n not in (s1, f)]

    # (a) s1 replicates an entry at index k to f only, then crashes.
    c.net.split({s1, f})
    k = c.nodes[s1].core().last_index + 1
    propose_on(c, s1, acquire("b", "o2"))
    run_until(c, lambda: c.nodes[f].storage.last_index >= k, 5, "f stored index k")
    c.crash(s1)

    # (b) The other three elect x, which is cut off at once: its entry at k stays local.
    run_until(c, lambda: c.leader() in rest, ELECTION_STEPS, "a leader among the rest")
    x = c.leader()
    assert x is not None and c.nodes[x].core().last_index == k
    y, z = (n for n in rest if n != x)
    c.net.isolate(x)
    c.crash(x)
    c.run(2)  # x's appends still in flight hit the cut

    # (c) s1 returns; s1 or f leads (w) and copies the old entry to y, not yet its own.
    c.heal()
    c.net.cut(s1, z)
    c.net.cut(f, z)
    c.start(s1)
    run_until(c, lambda: c.leader() in (s1, f), 2 * ELECTION_STEPS, "s1 or f leads")
    w = c.leader()
    assert w is not None
    run_until(c, lambda: c.nodes[y].storage.last_index >= k, 20, "y stored index k")
    assert c.nodes[y].storage.last_index == k, "y got the new leader's own entry too soon"
    c.step()  # w hears y's acknowledgement: the old entry is on a majority (s1, f, y)
    committed_early = c.nodes[w].core().commit_index >= k

    # (d) w and its twin crash; x returns and, with y and z, replaces the entry at k.
    c.net.isolate(w)
    c.crash(s1)
    c.crash(f)
    c.run(2)
    c.heal()
    c.start(x)
    run_until(c, lambda: c.leader() == x, 2 * ELECTION_STEPS, "x leads again")
    run_until(
        c,
        lambda: c.nodes[y].storage.term_at(k) == c.nodes[x].core().term_at(k),
        20,
        "y took x's entry at k",
    )
    return committed_early


# -- the checkers can fail ------------------------------------------------------------------


class FakeLog:
    def __init__(self, terms: dict[int, int], first_index: int = 1) -> None:
        self.terms = terms
        self._first = first_index

    @property
    def first_index(self) -> int:
        return self._first

    def term_at(self, index: int) -> int | None:
        return self.terms.get(index)


def test_checker_rejects_two_leaders_in_one_term() -> None:
    checker = RaftChecker()
    checker.on_role("n1", "leader", 3, FakeLog({}))
    with pytest.raises(SimInvariantError, match="election safety"):
        checker.on_role("n2", "leader", 3, FakeLog({}))


def test_checker_rejects_logs_that_agree_on_an_entry_but_not_before_it() -> None:
    checker = RaftChecker()
    checker.on_log_write("n1", [Entry(2, 5, "command", "x")], prev_term=1)
    with pytest.raises(SimInvariantError, match="log matching"):
        checker.on_log_write("n2", [Entry(2, 5, "command", "x")], prev_term=2)


def test_checker_rejects_two_entries_applied_at_one_index() -> None:
    checker = RaftChecker()
    checker.on_apply("n1", Entry(1, 4, "command", '{"op": "expire", "now_ms": 1}'))
    with pytest.raises(SimInvariantError, match="state machine safety"):
        checker.on_apply("n2", Entry(1, 4, "command", '{"op": "expire", "now_ms": 2}'))


def test_checker_rejects_a_leader_missing_a_committed_entry() -> None:
    checker = RaftChecker()
    checker.on_commit("n1", 2, 1, FakeLog({1: 1, 2: 1}), lambda: [])
    with pytest.raises(SimInvariantError, match="leader completeness"):
        checker.on_role("n2", "leader", 2, FakeLog({1: 1}))


def test_checker_rejects_a_committed_entry_cut_from_a_log() -> None:
    checker = RaftChecker()
    checker.on_commit("n1", 2, 1, FakeLog({1: 1, 2: 1}), lambda: [])
    checker.on_truncate("n2", 2, old_term=2, new_term=1)  # a stale entry: fine to replace
    with pytest.raises(SimInvariantError, match="committed entry overwritten"):
        checker.on_truncate("n3", 2, old_term=1, new_term=3)


def test_checker_rejects_a_second_vote_in_one_term() -> None:
    checker = RaftChecker()
    checker.on_hard_state("n1", HardState(term=4, voted_for="n2"))
    with pytest.raises(SimInvariantError, match="one vote per term"):
        checker.on_hard_state("n1", HardState(term=4, voted_for="n3"))


def test_checker_rejects_a_vote_sent_before_it_is_stored() -> None:
    checker = RaftChecker()
    vote = VoteResponse(src="n1", dst="n2", term=5, granted=True)
    with pytest.raises(SimInvariantError, match="vote durable"):
        checker.on_vote_sent(vote, HardState(term=4, voted_for=None))


def test_checker_rejects_a_commit_index_going_back() -> None:
    checker = RaftChecker()
    log = FakeLog({1: 1, 2: 1, 3: 1})
    checker.on_commit("n1", 3, 1, log, lambda: [])
    with pytest.raises(SimInvariantError, match="commit monotonic"):
        checker.on_commit("n1", 2, 1, log, lambda: [])


# -- the simulator catches a broken core -----------------------------------------------------
# Each test breaks the Raft core in memory (monkeypatch; the core's files are untouched)
# and expects the simulator to notice. They lean on private names of the core, so when
# those move the test skips and asks for the mutant to be updated.


def break_core(monkeypatch: pytest.MonkeyPatch, owner: type, name: str, broken: Any) -> None:
    if not hasattr(owner, name):
        pytest.skip(f"{owner.__name__}.{name} is gone: update this mutant")
    monkeypatch.setattr(owner, name, broken)


def test_simulator_catches_a_leader_that_commits_old_entries_by_counting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def commit_any_majority(self: Any) -> None:
        index = self._leader().quorum_match(self._log.stable_index)
        if index > self._log.commit:
            self._log.commit_to(index)

    break_core(monkeypatch, RaftNode, "_maybe_commit", commit_any_majority)
    with pytest.raises(SimInvariantError, match="leader completeness|committed entry"):
        figure_8(seed=0)


def test_simulator_catches_votes_that_ignore_the_log(monkeypatch: pytest.MonkeyPatch) -> None:
    break_core(monkeypatch, RaftLog, "is_up_to_date", lambda self, term, index: True)
    failures = (failure_of(SimSpec.from_seed(seed)) for seed in range(40))
    failure = next((f for f in failures if f is not None), None)
    assert failure is not None, "forty seeds should expose a leader elected with a stale log"
    assert "\n" not in str(failure) and "replay with: SIM_SEED=" in str(failure)
