"""One test per rule of the Raft paper (sections 5.1-5.4), after etcd's raft_paper_test.go.

Most tests drive a lone node with hand-made messages so the rule under test is the
only thing that happens; a few use the small `Cluster` from `raft_harness`.
PreVote is switched off where the rule is about plain elections.
"""

from __future__ import annotations

import pytest
from raft_harness import Cluster, drain, exchange, new_node, restored, sent, timeout

from distcluster_worker.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    HardState,
    VoteRequest,
    VoteResponse,
)
from distcluster_worker.raft.node import NotLeader, RaftNode


def append(
    src: str,
    dst: str,
    term: int,
    prev: tuple[int, int],
    entries: list[tuple[int, int]],
    commit: int = 0,
) -> AppendRequest:
    """An AppendRequest with entries given as (index, term) pairs."""
    ents = tuple(Entry(t, i, "command", f"e{i}") for i, t in entries)
    return AppendRequest(src, dst, term, prev[0], prev[1], ents, commit)


def leader_by_votes(node: RaftNode, *grants: str) -> RaftNode:
    """Make a lone node (pre_vote off) leader with the given granted votes."""
    timeout(node)
    for voter in grants:
        node.step(VoteResponse(voter, node.node_id, node.term, True))
    assert node.state == "leader"
    return node


# -- 5.1 terms and states ---------------------------------------------------------


def test_start_as_follower() -> None:
    node = new_node()
    assert (node.state, node.term, node.leader_id, node.voted_for) == ("follower", 0, None, None)


@pytest.mark.parametrize("role", ["follower", "candidate", "leader"])
def test_term_update_on_higher_term(role: str) -> None:
    node = new_node(pre_vote=False)
    if role == "candidate":
        timeout(node)
    elif role == "leader":
        leader_by_votes(node, "b")
    node.step(append("b", "a", 5, (0, 0), []))
    assert (node.state, node.term, node.leader_id) == ("follower", 5, "b")


def test_stale_term_request_is_answered_with_current_term() -> None:
    node = new_node()
    node.step(append("b", "a", 3, (0, 0), []))
    drain(node)
    node.step(append("c", "a", 2, (0, 0), []))
    (reply,) = sent(drain(node), AppendResponse, "c")
    assert (reply.term, reply.success, node.leader_id) == (3, False, "b")


# -- 5.2 leader election ----------------------------------------------------------


def test_leader_sends_heartbeats_every_heartbeat_ticks() -> None:
    cluster = Cluster(heartbeat_ticks=2)
    leader = cluster.elect("a")
    cluster.stabilize()
    leader.tick()
    assert not sent(drain(leader), AppendRequest)
    leader.tick()
    beats = sent(drain(leader), AppendRequest)
    assert sorted(m.dst for m in beats) == ["b", "c"]
    assert all(m.entries == () and m.leader_commit == leader.commit_index for m in beats)


def test_follower_starts_election_on_timeout() -> None:
    node = new_node(pre_vote=False)
    timeout(node)
    assert (node.state, node.term) == ("candidate", 1)
    requests = sent(drain(node), VoteRequest)
    assert sorted(m.dst for m in requests) == ["b", "c"]
    assert all((m.term, m.pre_vote) == (1, False) for m in requests)


def test_candidate_restarts_election_on_timeout() -> None:
    node = new_node(pre_vote=False)
    timeout(node)
    drain(node)
    for _ in range(40):
        if node.term == 2:
            break
        node.tick()
    assert (node.state, node.term, node.voted_for) == ("candidate", 2, "a")
    assert all(m.term == 2 for m in sent(drain(node), VoteRequest))


def test_candidate_votes_for_itself_and_persists_it() -> None:
    node = new_node(pre_vote=False)
    timeout(node)
    assert node.voted_for == "a"
    assert drain(node).hard_state == HardState(term=1, voted_for="a", commit=0)


@pytest.mark.parametrize(
    ("voters", "grants", "state"),
    [
        (("a",), (), "leader"),
        (("a", "b", "c"), ("b",), "leader"),
        (("a", "b", "c"), (), "candidate"),
        (("a", "b", "c", "d", "e"), ("b", "c"), "leader"),
        (("a", "b", "c", "d", "e"), ("b",), "candidate"),
    ],
)
def test_candidate_wins_with_majority(
    voters: tuple[str, ...], grants: tuple[str, ...], state: str
) -> None:
    node = new_node(voters=voters, pre_vote=False)
    timeout(node)
    for voter in grants:
        node.step(VoteResponse(voter, "a", 1, True))
    assert node.state == state


def test_candidate_steps_down_when_majority_rejects_then_retries() -> None:
    node = new_node(pre_vote=False)
    timeout(node)
    node.step(VoteResponse("b", "a", 1, False))
    assert node.state == "candidate"
    node.step(VoteResponse("c", "a", 1, False))
    assert (node.state, node.term) == ("follower", 1)
    timeout(node)
    assert (node.state, node.term) == ("candidate", 2)


def test_candidate_steps_down_on_append_from_leader_of_its_term() -> None:
    node = new_node(pre_vote=False)
    timeout(node)
    node.step(append("b", "a", 1, (0, 0), []))
    assert (node.state, node.term, node.leader_id) == ("follower", 1, "b")


def test_randomized_election_timeouts_differ() -> None:
    ticks = []
    for seed in range(40):
        node = new_node(seed=seed)
        count = 0
        while node.state == "follower":
            node.tick()
            count += 1
        ticks.append(count)
    assert all(10 <= t < 20 for t in ticks)
    assert len(set(ticks)) > 3


def test_vote_once_per_term() -> None:
    node = new_node()
    node.step(VoteRequest("b", "a", 1, 0, 0))
    node.step(VoteRequest("c", "a", 1, 0, 0))
    node.step(VoteRequest("b", "a", 1, 0, 0))
    ready = drain(node)
    granted = {(m.dst, m.granted) for m in sent(ready, VoteResponse)}
    assert granted == {("b", True), ("c", False)}
    assert ready.hard_state == HardState(term=1, voted_for="b", commit=0)


@pytest.mark.parametrize(
    ("last_term", "last_index", "granted"),
    [
        (1, 5, False),  # lower last term loses whatever its length
        (2, 1, False),  # same last term, shorter log
        (2, 2, True),
        (2, 3, True),
        (3, 1, True),  # higher last term wins whatever its length
    ],
)
def test_vote_rejected_for_stale_log(last_term: int, last_index: int, granted: bool) -> None:
    node = new_node(restored=restored(2, [(1, 1), (2, 2)]))
    node.step(VoteRequest("b", "a", 3, last_index, last_term))
    (reply,) = sent(drain(node), VoteResponse)
    assert reply.granted is granted
    assert node.term == 3


# -- 5.3 log replication ----------------------------------------------------------


def test_new_leader_appends_noop(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    assert leader.entries_from(1, 10) == [Entry(1, 1, "noop")]
    assert all(n.entries_from(1, 10) == [Entry(1, 1, "noop")] for n in cluster.nodes.values())


def test_leader_replicates_and_commits_by_majority() -> None:
    cluster = Cluster(ids="abcde")
    leader = cluster.elect("a")
    cluster.isolate("d")
    cluster.isolate("e")
    index = leader.propose("x")
    cluster.stabilize()
    assert leader.commit_index == index
    leader.tick()
    cluster.stabilize()
    assert [cluster.nodes[i].commit_index for i in "bc"] == [index, index]
    assert all(cluster.nodes[i].commit_index < index for i in "de")


def test_leader_counts_itself_only_up_to_its_stable_index(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    cluster.stabilize()
    index = leader.propose("x")
    ready = leader.ready()  # handed out but not yet persisted by a's shell
    for msg in sent(ready, AppendRequest, "b"):
        cluster.nodes["b"].step(msg)
    for reply in drain(cluster.nodes["b"]).messages:
        leader.step(reply)
    assert leader.commit_index < index
    leader.advance(ready)
    assert leader.commit_index == index


def test_leader_does_not_commit_old_term_entries_by_counting() -> None:
    """Figure 8: a replica count of an old-term entry commits nothing."""
    node = new_node(pre_vote=False, restored=restored(2, [(1, 1), (2, 2)]))
    leader = leader_by_votes(node, "b")
    drain(leader)
    assert leader.entries_from(3, 4) == [Entry(3, 3, "noop")]
    leader.step(AppendResponse("b", "a", 3, True, match_index=2))
    assert leader.commit_index == 0
    leader.step(AppendResponse("b", "a", 3, True, match_index=3))
    assert leader.commit_index == 3


def test_follower_rejects_append_past_its_log() -> None:
    node = new_node("b", restored=restored(2, [(1, 1), (2, 1), (3, 2), (4, 2)]))
    node.step(append("a", "b", 3, (6, 3), [(7, 3)]))
    (reply,) = sent(drain(node), AppendResponse)
    assert (reply.success, reply.conflict_index, reply.conflict_term) == (False, 5, 0)
    assert node.last_index == 4


def test_follower_rejects_append_with_mismatched_prev_term() -> None:
    node = new_node("b", restored=restored(2, [(1, 1), (2, 1), (3, 2), (4, 2)]))
    node.step(append("a", "b", 3, (4, 3), [(5, 3)]))
    (reply,) = sent(drain(node), AppendResponse)
    assert (reply.success, reply.conflict_index, reply.conflict_term) == (False, 3, 2)
    assert node.last_index == 4


def test_follower_truncates_conflicting_suffix() -> None:
    node = new_node("b", restored=restored(1, [(1, 1), (2, 1), (3, 1)], commit=1))
    node.step(append("a", "b", 2, (1, 1), [(2, 2)]))
    ready = drain(node)
    assert [(e.index, e.term) for e in node.entries_from(1, 10)] == [(1, 1), (2, 2)]
    assert ready.entries[0].index == 2  # the shell cuts its stored log here
    assert sent(ready, AppendResponse)[0].success


def test_duplicated_or_reordered_append_does_not_truncate() -> None:
    node = new_node("b")
    node.step(append("a", "b", 1, (0, 0), [(1, 1), (2, 1), (3, 1)]))
    node.step(append("a", "b", 1, (0, 0), [(1, 1)]))  # an older copy arriving late
    node.step(append("a", "b", 1, (1, 1), [(2, 1)]))
    node.step(append("a", "b", 1, (0, 0), [(1, 1), (2, 1), (3, 1)]))  # a duplicate
    replies = sent(drain(node), AppendResponse)
    assert node.last_index == 3
    assert [(r.success, r.match_index) for r in replies] == [
        (True, 3),
        (True, 1),
        (True, 2),
        (True, 3),
    ]


def test_fast_backoff_skips_a_term_the_leader_lacks() -> None:
    a = new_node(
        "a", pre_vote=False, restored=restored(4, [(1, 1), (2, 1), (3, 1), (4, 4), (5, 4)])
    )
    b = new_node("b", restored=restored(2, [(1, 1)] + [(i, 2) for i in range(2, 7)]))
    leader_by_votes(a, "c")
    (reject,) = sent(exchange(a, b), AppendResponse)
    assert (reject.conflict_term, reject.conflict_index) == (2, 2)
    a.step(reject)
    (probe,) = sent(drain(a), AppendRequest, "b")
    assert (probe.prev_log_index, probe.prev_log_term) == (1, 1)
    b.step(probe)
    assert [e.term for e in b.entries_from(1, 10)] == [1, 1, 1, 4, 4, 5]


def test_fast_backoff_jumps_to_the_end_of_a_shared_term() -> None:
    a = new_node("a", pre_vote=False, restored=restored(4, [(1, 1), (2, 1), (3, 3), (4, 4)]))
    b = new_node("b", restored=restored(3, [(1, 1), (2, 1), (3, 3), (4, 3), (5, 3), (6, 3)]))
    leader_by_votes(a, "c")
    (reject,) = sent(exchange(a, b), AppendResponse)
    assert (reject.conflict_term, reject.conflict_index) == (3, 3)
    a.step(reject)
    (probe,) = sent(drain(a), AppendRequest, "b")
    assert (probe.prev_log_index, probe.prev_log_term) == (3, 3)


def test_follower_commit_follows_leader() -> None:
    node = new_node("b")
    node.step(append("a", "b", 1, (0, 0), [(1, 1), (2, 1), (3, 1)], commit=2))
    assert node.commit_index == 2
    node.step(append("a", "b", 1, (1, 1), [], commit=3))  # only index 1 is vouched for
    assert node.commit_index == 2
    node.step(append("a", "b", 1, (3, 1), [], commit=3))
    assert node.commit_index == 3
    node.step(append("a", "b", 1, (0, 0), [(1, 1)], commit=1))  # never goes back
    assert node.commit_index == 3


def test_committed_entries_are_applied_in_order(cluster: Cluster) -> None:
    leader = cluster.elect("a")
    for i in range(5):
        leader.propose(f"cmd{i}")
        if i % 2:
            cluster.stabilize()
    cluster.stabilize()
    cluster.tick_all(2)
    for node_id in "abc":
        applied = cluster.applied[node_id]
        assert [e.index for e in applied] == list(range(1, 7))
        assert [e.data for e in applied[1:]] == [f"cmd{i}" for i in range(5)]


def test_propose_on_follower_raises_not_leader(cluster: Cluster) -> None:
    cluster.elect("a")
    with pytest.raises(NotLeader) as err:
        cluster.nodes["b"].propose("x")
    assert err.value.leader_id == "a"
