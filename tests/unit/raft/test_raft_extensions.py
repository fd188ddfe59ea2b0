"""Beyond the paper's core: PreVote, CheckQuorum and the leader lease, ReadIndex,
snapshots, batching and pipelining, restarts, single-node clusters and the Ready
contract (thesis chapters 6 and 9, as etcd implements them)."""

from __future__ import annotations

import pytest
from raft_harness import Cluster, drain, new_node, restored, sent, timeout

from distcluster_worker.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    HardState,
    ReadState,
    Snapshot,
    SnapshotRequest,
    SnapshotResponse,
    VoteRequest,
    VoteResponse,
)
from distcluster_worker.raft.node import NotLeader, RaftInvariantError

# -- PreVote ----------------------------------------------------------------------


def test_prevote_keeps_term_and_vote() -> None:
    node = new_node(restored=restored(3, [(1, 3)]))
    timeout(node)
    assert (node.state, node.term, node.voted_for) == ("pre_candidate", 3, None)
    requests = sent(drain(node), VoteRequest)
    assert sorted(m.dst for m in requests) == ["b", "c"]
    assert all((m.term, m.pre_vote, m.last_log_index) == (4, True, 1) for m in requests)


def test_prevote_is_granted_without_changing_the_voters_term() -> None:
    voter = new_node("b")
    voter.step(VoteRequest("a", "b", 1, 0, 0, pre_vote=True))
    (reply,) = sent(drain(voter), VoteResponse)
    assert (reply.granted, reply.term, reply.pre_vote) == (True, 1, True)
    assert (voter.term, voter.voted_for) == (0, None)


def test_prevote_is_refused_to_a_stale_log() -> None:
    voter = new_node("b", restored=restored(2, [(1, 2)]))
    voter.step(VoteRequest("a", "b", 3, 5, 1, pre_vote=True))
    (reply,) = sent(drain(voter), VoteResponse)
    assert not reply.granted
    assert voter.term == 2


def test_prevote_majority_makes_a_candidate_then_leader(cluster: Cluster) -> None:
    node = cluster.nodes["a"]
    timeout(node)
    assert node.state == "pre_candidate"
    node.step(VoteResponse("b", "a", 1, True, pre_vote=True))
    assert (node.state, node.term, node.voted_for) == ("candidate", 1, "a")
    cluster.stabilize()
    assert (node.state, node.term) == ("leader", 1)


def test_prevote_fails_while_the_leader_is_alive(cluster: Cluster) -> None:
    cluster.elect("a")
    cluster.stabilize()
    b = cluster.nodes["b"]
    timeout(b)  # only b's timer runs: its heartbeats are "late", the others' are not
    cluster.stabilize()
    assert b.state == "pre_candidate"
    assert [n.term for n in cluster.nodes.values()] == [1, 1, 1]
    cluster.tick("a")
    cluster.stabilize()
    assert (b.state, b.leader_id) == ("follower", "a")


# -- CheckQuorum and the leader lease -------------------------------------------------


def test_check_quorum_leader_steps_down_without_a_majority(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.isolate("a")
    for _ in range(2 * 10):
        leader.tick()
    assert (leader.state, leader.term, leader.leader_id) == ("follower", 1, None)


def test_check_quorum_leader_stays_with_a_majority(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.isolate("c")
    for _ in range(50):
        cluster.tick("a")
        cluster.stabilize()
    assert (leader.state, leader.term) == ("leader", 1)


def test_lease_ignores_vote_requests_without_bumping_term() -> None:
    cluster = Cluster(pre_vote=False)
    cluster.elect("a")
    b = cluster.nodes["b"]
    b.step(VoteRequest("c", "b", 5, 100, 5))
    assert (b.term, b.leader_id) == (1, "a")
    assert not sent(drain(b), VoteResponse)
    a = cluster.nodes["a"]
    a.step(VoteRequest("c", "a", 5, 100, 5))
    assert (a.state, a.term) == ("leader", 1)


def test_rejoining_node_cannot_depose_the_leader(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.isolate("c")
    for _ in range(60):
        cluster.tick("a")
        cluster.tick("b")
        cluster.tick("c")
        cluster.stabilize()
    assert cluster.nodes["c"].term == 1  # PreVote kept it from inflating its term
    cluster.heal()
    cluster.tick_all(30)
    assert (leader.state, leader.term) == ("leader", 1)
    assert cluster.nodes["c"].leader_id == "a"


# -- ReadIndex --------------------------------------------------------------------


def test_read_index_is_confirmed_by_a_heartbeat_quorum(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.stabilize()
    leader.read_index(7)
    ready = drain(leader)
    beats = sent(ready, AppendRequest)
    assert sorted(m.dst for m in beats) == ["b", "c"] and all(m.read_seq > 0 for m in beats)
    assert ready.read_states == []
    cluster.deliver(beats)
    cluster.stabilize()
    assert cluster.read_states["a"] == [ReadState(7, leader.commit_index)]


def test_read_index_ignores_acks_for_older_rounds(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.stabilize()
    leader.read_index(1)
    drain(leader)  # the round carrying read_seq 1 is lost
    leader.step(AppendResponse("b", "a", 1, True, match_index=1, read_seq=0))
    assert drain(leader).read_states == []
    leader.step(AppendResponse("b", "a", 1, True, match_index=1, read_seq=1))
    assert drain(leader).read_states == [ReadState(1, 1)]


def test_read_index_waits_for_a_commit_in_the_current_term() -> None:
    leader = new_node(pre_vote=False)
    timeout(leader)
    leader.step(VoteResponse("b", "a", 1, True))
    drain(leader)
    leader.read_index(9)
    assert not any(m.read_seq for m in sent(drain(leader), AppendRequest))
    leader.step(AppendResponse("b", "a", 1, True, match_index=1))  # commits the noop
    beats = sent(drain(leader), AppendRequest)
    assert leader.commit_index == 1 and {m.read_seq for m in beats} == {1}
    leader.step(AppendResponse("c", "a", 1, True, match_index=1, read_seq=1))
    assert drain(leader).read_states == [ReadState(9, 1)]


def test_read_index_on_a_single_voter_answers_at_once() -> None:
    node = new_node(voters=("a",))
    timeout(node)
    drain(node)
    node.read_index(3)
    assert drain(node).read_states == [ReadState(3, 1)]


def test_read_index_is_dropped_when_leadership_is_lost(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.stabilize()
    leader.read_index(1)
    drain(leader)
    leader.step(AppendRequest("b", "a", 2, 1, 1, (), 1))
    leader.step(AppendResponse("c", "a", 2, True, match_index=1, read_seq=1))
    assert leader.state == "follower"
    assert drain(leader).read_states == []


def test_read_index_on_follower_raises_not_leader(cluster: Cluster) -> None:
    cluster.elect("a")
    with pytest.raises(NotLeader) as err:
        cluster.nodes["c"].read_index(1)
    assert err.value.leader_id == "a"


# -- snapshots --------------------------------------------------------------------


def test_lagging_follower_is_caught_up_by_snapshot(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.isolate("c")
    leader.propose_many([f"x{i}" for i in range(5)])
    cluster.stabilize()
    leader.compact(leader.applied_index, "state@6")
    assert leader.first_index == 7 and leader.snapshot == Snapshot(6, 1, "state@6", ("a", "b", "c"))
    cluster.heal()
    cluster.tick_all(25)
    c = cluster.nodes["c"]
    assert cluster.installed["c"] == [leader.snapshot]
    assert cluster.storage["c"].snapshot == leader.snapshot
    assert (c.commit_index, c.applied_index, c.first_index) == (6, 6, 7)
    index = leader.propose("after")
    cluster.stabilize()
    cluster.tick_all(1)
    assert [e.index for e in cluster.applied["c"]] == [index]  # 1..6 came in the snapshot


def test_follower_ignores_snapshot_it_has_already_committed() -> None:
    node = new_node("b")
    node.step(AppendRequest("a", "b", 1, 0, 0, (Entry(1, 1, "noop"), Entry(1, 2, "command")), 2))
    node.step(SnapshotRequest("a", "b", 1, Snapshot(1, 1, "s")))
    (reply,) = sent(drain(node), SnapshotResponse)
    assert reply.match_index == 2
    assert node.snapshot is None and node.last_index == 2


def test_follower_installs_snapshot_and_reports_its_index() -> None:
    node = new_node("b", restored=restored(1, [(1, 1), (2, 1)]))
    snap = Snapshot(5, 2, "state", ("a", "b", "c"))
    node.step(SnapshotRequest("a", "b", 2, snap))
    ready = drain(node)
    assert ready.snapshot == snap and ready.committed_entries == []
    assert sent(ready, SnapshotResponse)[0].match_index == 5
    assert (node.commit_index, node.applied_index, node.last_index) == (5, 5, 5)
    assert ready.hard_state == HardState(2, None, 5)


def test_compact_beyond_applied_is_refused(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    with pytest.raises(ValueError):
        leader.compact(leader.applied_index + 1, "x")


# -- batching and pipelining --------------------------------------------------------


def test_batching_puts_many_proposals_in_one_append(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.stabilize()
    leader.propose_many([str(i) for i in range(10)])
    (msg,) = sent(drain(leader), AppendRequest, "b")
    assert len(msg.entries) == 10


def test_batches_are_capped_by_max_entries_per_append() -> None:
    cluster = Cluster(max_entries_per_append=4)
    leader = cluster.elect("a")
    cluster.stabilize()
    leader.propose_many([str(i) for i in range(10)])
    assert [len(m.entries) for m in sent(drain(leader), AppendRequest, "b")] == [4, 4, 2]


def test_batches_are_capped_by_max_append_bytes() -> None:
    cluster = Cluster(max_append_bytes=250)
    leader = cluster.elect("a")
    cluster.stabilize()
    leader.propose_many(["x" * 100] * 5 + ["y" * 1000])
    appends = sent(drain(leader), AppendRequest, "b")
    # Two entries fit in 250 bytes; an entry larger than the cap still goes, alone.
    assert [len(m.entries) for m in appends] == [2, 2, 1, 1]


def test_pipelining_keeps_several_appends_in_flight() -> None:
    cluster = Cluster(max_inflight_appends=3)
    leader = cluster.elect("a")
    cluster.stabilize()
    for i in range(5):
        leader.propose(f"p{i}")
    appends = sent(drain(leader), AppendRequest, "b")
    assert [len(m.entries) for m in appends] == [1, 1, 1]  # the window is full
    b = cluster.nodes["b"]
    b.step(appends[0])
    for reply in drain(b).messages:
        leader.step(reply)
    (more,) = sent(drain(leader), AppendRequest, "b")
    assert [e.data for e in more.entries] == ["p3", "p4"]


def test_rejection_in_replicate_falls_back_to_probe(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.stabilize()
    leader.propose("x")
    leader.propose("y")
    assert len(sent(drain(leader), AppendRequest, "b")) == 2
    # The first append (prev 1) was lost, so b rejects the second (prev 2): too short.
    leader.step(AppendResponse("b", "a", 1, False, match_index=2, conflict_index=2))
    assert leader.status()["progress"]["b"]["state"] == "probe"
    (probe,) = sent(drain(leader), AppendRequest, "b")
    assert probe.prev_log_index == 1 and len(probe.entries) == 2


# -- restart, single node, Ready -------------------------------------------------------


def test_restart_from_restored_state(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    leader.propose_many(["x", "y", "z"])
    cluster.stabilize()
    cluster.tick_all(1)
    b = cluster.nodes["b"]
    b.compact(2, "state@2")
    stored = cluster.storage["b"]
    stored.snapshot, stored.entries = b.snapshot, [e for e in stored.entries if e.index > 2]
    b = cluster.restart("b")
    assert (b.term, b.voted_for, b.commit_index, b.applied_index) == (1, "a", 4, 2)
    assert b.snapshot == Snapshot(2, 1, "state@2", ("a", "b", "c"))
    cluster.stabilize()
    assert [e.data for e in cluster.applied["b"]] == ["y", "z"]
    index = leader.propose("w")
    cluster.stabilize()
    cluster.tick_all(1)
    assert cluster.applied["b"][-1].index == index


def test_restart_with_commit_past_the_log_is_an_invariant_error() -> None:
    with pytest.raises(RaftInvariantError):
        new_node(restored=restored(1, [(1, 1)], commit=3))


def test_single_node_cluster_elects_itself_and_commits_when_stable() -> None:
    node = new_node(voters=("a",))
    timeout(node)
    assert (node.state, node.term) == ("leader", 1)
    assert [e.kind for e in drain(node).committed_entries] == ["noop"]
    index = node.propose("x")
    assert node.commit_index == index - 1  # not committed before it is stable
    assert [e.data for e in drain(node).committed_entries] == ["x"]
    assert node.applied_index == index


def test_ready_twice_without_advance_loses_nothing(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.stabilize()
    leader.propose("x")
    first = leader.ready()
    leader.propose("y")
    second = leader.ready()
    assert [e.data for e in second.entries] == ["x", "y"]
    assert set(map(id, first.messages)) <= set(map(id, second.messages))
    leader.advance(second)
    assert leader.ready().entries == []


def test_step_ignores_messages_for_other_nodes_and_answers_from_strangers() -> None:
    # A stranger's *request* may be a leader we do not know yet (test_raft_confchange).
    node = new_node("a")
    node.step(AppendRequest("b", "c", 9, 0, 0, (), 0))
    node.step(AppendResponse("z", "a", 9, True, match_index=3))
    node.step(VoteResponse("z", "a", 9, True))
    assert (node.term, node.has_ready()) == (0, False)


def test_malformed_append_is_ignored() -> None:
    node = new_node("b")
    gap = (Entry(1, 1, "noop"), Entry(1, 3, "command"))
    node.step(AppendRequest("a", "b", 1, 0, 0, gap, 0))
    future = (Entry(5, 1, "command"),)
    node.step(AppendRequest("a", "b", 1, 0, 0, future, 0))
    assert node.last_index == 0
