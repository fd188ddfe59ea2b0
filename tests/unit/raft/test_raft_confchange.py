"""Membership changes: one rule per test (Raft thesis chapter 4, learners as etcd has them).

Single-server changes: a node joins as a learner (it gets the log, never votes, never
counts), is promoted once it caught up, and is removed in one step; the leader is
removed by handing over first (thesis 3.10), or steps down once its own removal
commits. The configuration is the latest one in the log, committed or not.
"""

from __future__ import annotations

import json

import pytest
from raft_harness import Cluster, drain, new_node, sent, timeout

from distcluster_worker.raft.confchange import (
    ConfChange,
    Membership,
    decode_membership,
    encode_membership,
)
from distcluster_worker.raft.errors import (
    ConfChangeInProgress,
    InvalidConfChange,
    NotLeader,
    TransferInProgress,
)
from distcluster_worker.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    HardState,
    Message,
    Snapshot,
    SnapshotRequest,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    WireError,
    entry_from_wire,
    message_from_wire,
    message_to_wire,
    snapshot_from_wire,
)
from distcluster_worker.raft.node import RaftNode, Restored

ABC = ("a", "b", "c")


def config_entry(
    index: int, term: int, voters: tuple[str, ...], learners: tuple[str, ...] = ()
) -> Entry:
    return Entry(term, index, "config", encode_membership(Membership.of(voters, learners)))


def change(cluster: Cluster, leader: RaftNode, op: str, node_id: str) -> int:
    """Propose a change on `leader`, let it commit everywhere reachable; its index."""
    index = leader.propose_conf_change(ConfChange(op, node_id))  # type: ignore[arg-type]
    cluster.stabilize()
    cluster.tick_all(1)
    assert leader.commit_index >= index
    return index


def four_with_learner_d() -> tuple[Cluster, RaftNode]:
    """a, b, c voters, a leading, and d added as a learner that has caught up."""
    cluster = Cluster(ids=("a", "b", "c", "d"), voters=ABC)
    leader = cluster.elect("a")
    change(cluster, leader, "add_learner", "d")
    return cluster, leader


def cut(cluster: Cluster, a: str, *others: str) -> None:
    cluster.cut |= {frozenset((a, other)) for other in others}


# -- the membership value ------------------------------------------------------------


def test_changes_move_one_server_at_a_time() -> None:
    m = Membership.of(ABC)
    m = m.apply(ConfChange("add_learner", "d"))
    assert m == Membership(ABC, ("d",))
    m = m.apply(ConfChange("promote", "d"))
    assert m == Membership(("a", "b", "c", "d"))
    assert m.apply(ConfChange("remove", "a")) == Membership(("b", "c", "d"))


@pytest.mark.parametrize(
    ("op", "node_id", "reason"),
    [
        ("add_learner", "a", "already_member"),
        ("add_learner", "d", "already_member"),
        ("add_learner", "", "bad_node_id"),
        ("promote", "a", "not_learner"),
        ("promote", "z", "not_learner"),
        ("remove", "z", "not_member"),
    ],
)
def test_invalid_changes_are_refused_with_a_reason(op: str, node_id: str, reason: str) -> None:
    with pytest.raises(InvalidConfChange) as err:
        Membership(ABC, ("d",)).apply(ConfChange(op, node_id))  # type: ignore[arg-type]
    assert err.value.reason == reason


def test_the_last_voter_cannot_be_removed() -> None:
    with pytest.raises(InvalidConfChange) as err:
        Membership(("a",), ("b",)).apply(ConfChange("remove", "a"))
    assert err.value.reason == "last_voter"


def test_membership_round_trips_through_the_entry_data() -> None:
    m = Membership(("a", "c"), ("b",))
    assert decode_membership(encode_membership(m)) == m
    for bad in (
        "",
        "[]",
        '{"voters": "a"}',
        '{"voters": []}',
        '{"voters": ["a"], "learners": ["a"]}',
    ):
        with pytest.raises(ValueError):
            decode_membership(bad)


# -- learners --------------------------------------------------------------------------


def test_learner_receives_the_log_but_is_not_counted_for_commit() -> None:
    cluster = Cluster(ids=("a", "b", "c", "d"), voters=ABC)
    leader = cluster.elect("a")
    leader.propose("x")
    change(cluster, leader, "add_learner", "d")
    d = cluster.nodes["d"]
    assert d.membership == Membership(ABC, ("d",))
    assert [e.data for e in cluster.applied["d"] if e.kind == "command"] == ["x"]

    cut(cluster, "a", "b", "c")  # only the learner still hears the leader
    index = leader.propose("y")
    cluster.stabilize()
    assert d.last_index == index
    assert leader.commit_index < index  # a and d: half of the nodes, one of three voters


def test_learner_catches_up_through_a_snapshot() -> None:
    cluster = Cluster(ids=("a", "b", "c", "d"), voters=ABC)
    leader = cluster.elect("a")
    leader.propose_many(["x", "y"])
    cluster.stabilize()
    cluster.tick_all(1)
    leader.compact(leader.applied_index, "state@3")
    change(cluster, leader, "add_learner", "d")
    cluster.tick_all(2)
    d = cluster.nodes["d"]
    assert cluster.installed["d"] == [Snapshot(3, 1, "state@3", ABC)]
    assert (d.membership, d.commit_index) == (Membership(ABC, ("d",)), leader.commit_index)


def test_learner_never_campaigns_and_ignores_timeout_now() -> None:
    restored = Restored(HardState(1), None, [config_entry(1, 1, ABC, ("d",))])
    node = new_node("d", voters=(), join=True, restored=restored)
    for _ in range(100):
        node.tick()
    node.step(TimeoutNow("a", "d", 1))
    assert (node.state, node.term, drain(node).messages) == ("follower", 1, [])


def test_learner_vote_does_not_count() -> None:
    log = [config_entry(1, 1, ABC, ("d",))]
    node = new_node("b", restored=Restored(HardState(1), None, log), pre_vote=False)
    timeout(node)
    assert sorted(m.dst for m in sent(drain(node), VoteRequest)) == ["a", "c"]
    node.step(VoteResponse("d", "b", 2, True))
    assert node.state == "candidate"
    node.step(VoteResponse("c", "b", 2, True))
    assert node.state == "leader"


def test_check_quorum_and_reads_do_not_count_learners() -> None:
    cluster, leader = four_with_learner_d()
    cut(cluster, "a", "b", "c")
    leader.read_index(1)
    cluster.stabilize()
    assert cluster.read_states["a"] == []  # d acknowledged, but it votes for nothing
    for _ in range(2 * 10):
        cluster.tick("a")
        cluster.stabilize()
    assert leader.state == "follower"


def test_learner_caught_up_only_once_it_holds_every_committed_entry() -> None:
    cluster = Cluster(ids=("a", "b", "c", "d"), voters=ABC)
    leader = cluster.elect("a")
    cluster.isolate("d")
    change(cluster, leader, "add_learner", "d")
    assert not leader.learner_caught_up("d")
    assert leader.status()["progress"]["d"]["learner"] is True
    cluster.heal()
    cluster.tick_all(3)
    assert leader.learner_caught_up("d")
    with pytest.raises(InvalidConfChange):
        leader.learner_caught_up("b")
    with pytest.raises(NotLeader):
        cluster.nodes["b"].learner_caught_up("d")


def test_promoted_learner_counts_towards_commit() -> None:
    cluster, leader = four_with_learner_d()
    change(cluster, leader, "promote", "d")
    assert leader.voters == cluster.nodes["d"].voters == ("a", "b", "c", "d")
    status = leader.status()
    assert (status["voters"], status["learners"]) == (["a", "b", "c", "d"], [])

    cluster.isolate("c")
    index = leader.propose("a, b and d")
    cluster.stabilize()
    assert leader.commit_index >= index  # three of four voters
    cluster.isolate("b")
    index = leader.propose("a and d")
    cluster.stabilize()
    assert leader.commit_index < index  # two of four are no majority


def test_promoted_node_may_campaign() -> None:
    node = new_node("d", voters=(), join=True)
    node.step(AppendRequest("a", "d", 1, 0, 0, (config_entry(1, 1, ABC, ("d",)),), 1))
    node.step(AppendRequest("a", "d", 1, 1, 1, (config_entry(2, 1, ("a", "b", "c", "d")),), 2))
    assert node.promotable
    timeout(node)
    assert node.state == "pre_candidate"


# -- removal ------------------------------------------------------------------------


def test_removed_follower_neither_counts_nor_gets_entries() -> None:
    cluster = Cluster()
    leader = cluster.elect("a")
    change(cluster, leader, "remove", "c")
    assert leader.voters == cluster.nodes["b"].voters == ("a", "b")
    assert "c" not in leader.status()["progress"]
    leader.step(AppendResponse("c", "a", 1, True, match_index=2))  # a stale answer
    leader.propose("x")
    assert not sent(leader.ready(), AppendRequest, "c")
    cluster.tick_all(50)  # c times out, but its pre-votes meet the lease
    assert (leader.state, leader.term) == ("leader", 1)
    cluster.isolate("b")
    index = leader.propose("y")
    cluster.stabilize()
    assert leader.commit_index < index  # a alone is not a majority of {a, b}


def test_removed_node_never_campaigns() -> None:
    log = [config_entry(1, 1, ("a", "b"))]
    node = new_node("c", restored=Restored(HardState(1), None, log))
    for _ in range(100):
        node.tick()
    assert (node.state, node.has_ready()) == ("follower", False)


def test_leader_is_removed_after_handing_over() -> None:
    cluster = Cluster()
    a = cluster.elect("a")
    cluster.tick_all(1)
    a.transfer_leadership("b")
    cluster.stabilize()
    b = cluster.nodes["b"]
    assert (b.state, b.term, a.state, a.leader_id) == ("leader", 2, "follower", "b")
    change(cluster, b, "remove", "a")
    assert b.voters == ("b", "c")
    cluster.tick_all(50)
    assert (b.state, b.term) == ("leader", 2)


def test_leader_removed_without_transfer_steps_down_once_it_commits() -> None:
    cluster = Cluster()
    a = cluster.elect("a")
    cluster.tick_all(1)
    cluster.isolate("b")
    index = a.propose_conf_change(ConfChange("remove", "a"))
    cluster.stabilize()
    # a no longer counts itself: c alone is not a majority of {b, c}.
    assert (a.state, a.commit_index < index) == ("leader", True)
    cluster.heal()
    cluster.tick_all(60)
    assert a.state == "follower" and a.commit_index >= index
    assert cluster.leader().node_id in ("b", "c")
    for _ in range(100):
        a.tick()
    assert not sent(drain(a), VoteRequest)


# -- one change at a time ---------------------------------------------------------------


def test_second_change_is_refused_while_the_first_is_uncommitted() -> None:
    cluster = Cluster(ids=("a", "b", "c", "d", "e"), voters=ABC)
    a = cluster.elect("a")
    cluster.tick_all(1)
    cluster.isolate("b")
    cluster.isolate("c")
    a.propose_conf_change(ConfChange("add_learner", "d"))
    with pytest.raises(ConfChangeInProgress) as err:
        a.propose_conf_change(ConfChange("add_learner", "e"))
    assert err.value.reason == "config_uncommitted"
    cluster.heal()
    cluster.tick_all(25)
    change(cluster, a, "add_learner", "e")
    assert a.learners == ("d", "e")


def test_change_is_refused_until_the_leader_commits_in_its_term() -> None:
    leader = new_node(pre_vote=False)
    timeout(leader)
    leader.step(VoteResponse("b", "a", 1, True))
    drain(leader)
    with pytest.raises(ConfChangeInProgress) as err:
        leader.propose_conf_change(ConfChange("add_learner", "d"))
    assert err.value.reason == "term_uncommitted"
    leader.step(AppendResponse("b", "a", 1, True, match_index=1))  # commits the noop
    assert leader.propose_conf_change(ConfChange("add_learner", "d")) == 2


def test_invalid_change_appends_nothing_and_followers_cannot_propose() -> None:
    cluster = Cluster()
    a = cluster.elect("a")
    last = a.last_index
    with pytest.raises(InvalidConfChange):
        a.propose_conf_change(ConfChange("remove", "z"))
    assert a.last_index == last
    with pytest.raises(NotLeader):
        cluster.nodes["b"].propose_conf_change(ConfChange("add_learner", "d"))


# -- the configuration lives in the log ----------------------------------------------------


def test_config_takes_effect_on_append_and_reverts_on_truncation() -> None:
    node = new_node("b")
    node.step(AppendRequest("a", "b", 1, 0, 0, (config_entry(1, 1, ("a", "c")),), 0))
    assert (node.voters, node.commit_index, node.promotable) == (("a", "c"), 0, False)
    node.step(AppendRequest("c", "b", 2, 0, 0, (Entry(2, 1, "noop"),), 0))
    assert (node.voters, node.promotable, node.config_index) == (ABC, True, 0)


def test_restart_recovers_the_config_from_the_log() -> None:
    cluster, _ = four_with_learner_d()
    for node_id in ("a", "d"):
        assert cluster.restart(node_id).membership == Membership(ABC, ("d",))


def test_restart_recovers_the_config_from_a_snapshot() -> None:
    cluster, _ = four_with_learner_d()
    b = cluster.nodes["b"]
    b.compact(b.applied_index, "state")
    assert b.snapshot is not None and (b.snapshot.voters, b.snapshot.learners) == (ABC, ("d",))
    stored = cluster.storage["b"]
    stored.snapshot = b.snapshot
    stored.entries = [e for e in stored.entries if e.index > b.snapshot.last_index]
    assert cluster.restart("b").membership == Membership(ABC, ("d",))


def test_joining_node_never_campaigns_and_follows_a_leader_it_did_not_know() -> None:
    node = new_node("d", voters=(), join=True)
    for _ in range(100):
        node.tick()
    assert (node.state, node.has_ready(), node.membership.known) == ("follower", False, False)
    node.step(AppendRequest("a", "d", 3, 0, 0, (), 0))
    (reply,) = sent(drain(node), AppendResponse)
    assert (node.term, node.leader_id, reply.success) == (3, "a", True)
    for _ in range(100):
        node.tick()
    assert not sent(drain(node), VoteRequest)


def test_a_voter_follows_a_leader_it_does_not_know_yet() -> None:
    node = new_node("a")
    node.step(AppendRequest("z", "a", 2, 0, 0, (), 0))
    (reply,) = sent(drain(node), AppendResponse)
    assert (node.term, node.leader_id, reply.dst, reply.success) == (2, "z", "z", True)


# -- leadership transfer -------------------------------------------------------------------


def test_transfer_brings_a_lagging_target_up_to_date_first() -> None:
    cluster = Cluster()
    a = cluster.elect("a")
    cluster.isolate("c")
    a.propose_many(["x", "y"])
    cluster.stabilize()
    cluster.heal()
    a.transfer_leadership("c")
    msgs = cluster.collect("a")
    assert not [m for m in msgs if isinstance(m, TimeoutNow)]
    cluster.deliver(msgs)
    cluster.stabilize()
    c = cluster.nodes["c"]
    assert (c.state, c.term) == ("leader", 2)
    assert [e.data for e in c.entries_from(2, 4)] == ["x", "y"]


def test_transfer_refuses_proposals_and_is_abandoned_after_an_election_timeout() -> None:
    cluster = Cluster()
    a = cluster.elect("a")
    cluster.tick_all(1)
    cluster.isolate("c")
    a.transfer_leadership("c")
    with pytest.raises(TransferInProgress) as err:
        a.propose("x")
    assert isinstance(err.value, NotLeader) and err.value.target == "c"
    for _ in range(10):
        cluster.tick("a")
        cluster.stabilize()
    assert (a.state, a.transfer_target) == ("leader", None)
    a.propose("x")


def test_transfer_target_must_be_a_voter() -> None:
    cluster, leader = four_with_learner_d()
    with pytest.raises(InvalidConfChange) as err:
        leader.transfer_leadership("d")
    assert err.value.reason == "not_voter"


def test_transfer_vote_is_granted_despite_the_lease() -> None:
    cluster = Cluster(pre_vote=False)
    cluster.elect("a")
    b = cluster.nodes["b"]
    b.step(VoteRequest("c", "b", 2, 1, 1))
    assert b.term == 1 and not sent(drain(b), VoteResponse)
    b.step(VoteRequest("c", "b", 2, 1, 1, transfer=True))
    (reply,) = sent(drain(b), VoteResponse)
    assert (reply.granted, b.term, b.voted_for) == (True, 2, "c")


def test_timeout_now_skips_pre_vote() -> None:
    node = new_node("b")
    node.step(AppendRequest("a", "b", 1, 0, 0, (Entry(1, 1, "noop"),), 1))
    drain(node)
    node.step(TimeoutNow("a", "b", 1))
    requests = sent(drain(node), VoteRequest)
    assert (node.state, node.term) == ("candidate", 2)
    assert all(m.transfer and not m.pre_vote for m in requests)


# -- the wire ---------------------------------------------------------------------------------


def _round_trip(msg: Message) -> Message:
    return message_from_wire(json.loads(json.dumps(message_to_wire(msg))))


def test_codec_round_trips_the_new_messages_and_fields() -> None:
    msgs: list[Message] = [
        VoteRequest("a", "b", 3, 4, 2, transfer=True),
        TimeoutNow("a", "b", 3),
        AppendRequest("a", "b", 3, 0, 0, (config_entry(1, 3, ("a", "b"), ("c",)),), 0),
        SnapshotRequest("a", "b", 3, Snapshot(5, 3, "s", ("a", "b"), ("c",))),
    ]
    assert [_round_trip(m) for m in msgs] == msgs


def test_codec_reads_what_older_nodes_wrote() -> None:
    old_vote = {
        "type": "VoteRequest",
        "src": "a",
        "dst": "b",
        "term": 1,
        "last_log_index": 0,
        "last_log_term": 0,
        "pre_vote": False,
    }
    assert message_from_wire(old_vote) == VoteRequest("a", "b", 1, 0, 0)
    old_snapshot = {"last_index": 3, "last_term": 1, "data": "s", "voters": ["a", "b"]}
    assert snapshot_from_wire(old_snapshot) == Snapshot(3, 1, "s", ("a", "b"))


def test_codec_refuses_bad_config_data_and_memberships() -> None:
    with pytest.raises(WireError):
        entry_from_wire([1, 1, "config", "not json"])
    with pytest.raises(WireError):
        snapshot_from_wire(
            {"last_index": 1, "last_term": 1, "data": "", "voters": ["a"], "learners": ["a"]}
        )
    with pytest.raises(WireError):
        message_from_wire({"type": "TimeoutNow", "src": "a", "dst": "b"})


def test_malformed_memberships_from_the_wire_are_ignored() -> None:
    node = new_node("b")
    bad = Entry(1, 1, "config", '{"voters": []}')
    node.step(AppendRequest("a", "b", 1, 0, 0, (bad,), 0))
    node.step(SnapshotRequest("a", "b", 1, Snapshot(3, 1, "s", ("a", "a"))))
    assert (node.last_index, node.voters, node.snapshot) == (0, ABC, None)


def test_committed_membership_trails_the_latest_one() -> None:
    cluster = Cluster(ids=("a", "b", "c", "d"), voters=ABC)
    leader = cluster.elect("a")
    cluster.isolate("b")
    cluster.isolate("c")
    leader.propose_conf_change(ConfChange("add_learner", "d"))
    assert leader.membership == Membership(ABC, ("d",))
    assert leader.committed_membership == Membership(ABC)
