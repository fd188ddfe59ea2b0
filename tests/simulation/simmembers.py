"""Membership changes made the way the lock role's admin endpoints and the operator make them.

A `MembershipDriver` walks the number of voters between `low` and `high` (3 → 5 → 3
style) while faults and lock traffic go on. To grow, it adds a node that is no member as
a learner, waits until the leader says the learner caught up, then promotes it. To
shrink, it removes a voter; when the victim is the leader it usually hands leadership
over first (thesis 3.10) and removes the old leader from the new one, and sometimes it
removes the leader outright, which must then step down once the removal commits.

Like the shell, it decides from the leader's latest configuration and leaves it to the
core to refuse what it must: a change while another is uncommitted, or before the leader
committed an entry of its term. It tries often, so those refusals are exercised (and a
core that forgot them is caught by the checkers). A removed node is retired a little
after its removal commits, as the operator deletes the pod, and recommissioned with its
stable storage when it is added again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from simcluster import Cluster

from distcluster_worker.raft.confchange import ConfChange, Membership
from distcluster_worker.raft.errors import ConfChangeInProgress, InvalidConfChange, NotLeader
from distcluster_worker.raft.node import RaftNode


@dataclass(frozen=True)
class MemberPlan:
    """How the driver behaves; `from_rng` draws one per seed."""

    low: int = 3
    high: int = 5
    rate: float = 0.15  # chance per step to try the next change
    transfer_rate: float = 0.8  # removing the leader: hand over first
    eager_promote_rate: float = 0.05  # promote a learner that has not caught up yet
    drop_learner_rate: float = 0.02  # give up on a learner (it may be stuck)
    retire_delay: int = 40  # a removed node is stopped up to this many steps later
    handover_steps: int = 60  # give up on a handover that did not happen

    @staticmethod
    def from_rng(rng: random.Random) -> MemberPlan:
        return MemberPlan(
            low=rng.choice((2, 3, 3)),
            high=rng.choice((4, 5, 5)),
            rate=rng.choice((0.05, 0.15, 0.3)),
            transfer_rate=rng.choice((0.5, 0.8, 1.0)),
            retire_delay=rng.choice((0, 40, 150)),
        )


@dataclass
class Handover:
    old: str
    target: str
    deadline: int


@dataclass
class MembershipDriver:
    rng: random.Random
    plan: MemberPlan = field(default_factory=MemberPlan)
    growing: bool = True
    handover: Handover | None = None
    retire_at: dict[str, int] = field(default_factory=dict)

    def step(self, cluster: Cluster) -> None:
        self.settle(cluster)
        if self.rng.random() >= self.plan.rate:
            return
        leader = cluster.leader()
        if leader is None:
            return
        raft = cluster.nodes[leader].core()
        if self.handover is not None:
            self.continue_handover(cluster, raft, self.handover)
            return
        membership = raft.membership
        voters = len(membership.voters)
        if self.growing and voters >= self.plan.high:
            self.growing = False
        elif not self.growing and voters <= self.plan.low:
            self.growing = True
        if membership.learners:
            self.promote(cluster, raft, membership)
        elif self.growing:
            self.add(cluster, raft, membership)
        else:
            self.remove(cluster, raft, membership)

    # -- growing -------------------------------------------------------------------------

    def add(self, cluster: Cluster, raft: RaftNode, membership: Membership) -> None:
        spares = [n for n in cluster.ids if not membership.is_member(n)]
        if not spares:
            return
        node_id = self.rng.choice(spares)
        self.retire_at.pop(node_id, None)
        if cluster.nodes[node_id].retired:
            cluster.recommission(node_id)
        self.propose(cluster, raft, ConfChange("add_learner", node_id))

    def promote(self, cluster: Cluster, raft: RaftNode, membership: Membership) -> None:
        learner = self.rng.choice(membership.learners)
        if self.rng.random() < self.plan.drop_learner_rate:
            self.propose(cluster, raft, ConfChange("remove", learner))
        elif raft.learner_caught_up(learner) or self.rng.random() < self.plan.eager_promote_rate:
            self.propose(cluster, raft, ConfChange("promote", learner))

    # -- shrinking ---------------------------------------------------------------------------

    def remove(self, cluster: Cluster, raft: RaftNode, membership: Membership) -> None:
        victim = self.rng.choice(membership.voters)
        if victim != raft.node_id or self.rng.random() >= self.plan.transfer_rate:
            self.propose(cluster, raft, ConfChange("remove", victim))
            return
        others = [v for v in membership.voters if v != victim]
        if others:
            self.hand_over(cluster, raft, self.rng.choice(others))

    def hand_over(self, cluster: Cluster, raft: RaftNode, target: str) -> None:
        deadline = cluster.now + self.plan.handover_steps
        self.handover = Handover(raft.node_id, target, deadline)
        cluster.transfer_leadership(raft.node_id, target)

    def continue_handover(self, cluster: Cluster, raft: RaftNode, handover: Handover) -> None:
        """Remove the old leader from whoever leads now; retry or give up otherwise."""
        if raft.node_id != handover.old:
            if not raft.membership.is_member(handover.old):
                self.handover = None
            elif self.propose(cluster, raft, ConfChange("remove", handover.old)):
                self.handover = None
            return
        if cluster.now > handover.deadline:
            self.handover = None
        elif raft.transfer_target is None:  # abandoned: try again, or remove it outright
            if self.rng.random() < 0.5 and raft.membership.is_voter(handover.target):
                cluster.transfer_leadership(raft.node_id, handover.target)
            else:
                self.handover = None
                self.propose(cluster, raft, ConfChange("remove", handover.old))

    # -- plumbing ------------------------------------------------------------------------------

    def propose(self, cluster: Cluster, raft: RaftNode, change: ConfChange) -> bool:
        try:
            cluster.propose_conf_change(raft.node_id, change)
        except ConfChangeInProgress as exc:
            cluster.record(f"conf refused {exc.reason}", change)
            return False
        except (InvalidConfChange, NotLeader) as exc:
            cluster.record(f"conf refused {type(exc).__name__}", change)
            return False
        return True

    def settle(self, cluster: Cluster) -> None:
        """Retire each node a little after the leader committed its removal."""
        leader = cluster.leader()
        if leader is not None:
            raft = cluster.nodes[leader].core()
            committed, latest = raft.committed_membership, raft.membership
            for node in cluster.nodes.values():
                node_id = node.node_id
                gone = not committed.is_member(node_id) and not latest.is_member(node_id)
                idle = not node.storage.written  # a spare that never joined
                if gone and not idle and not node.retired and node_id not in self.retire_at:
                    delay = self.rng.randint(0, self.plan.retire_delay)
                    self.retire_at[node_id] = cluster.now + delay
        for node_id, at in sorted(self.retire_at.items()):
            if at <= cluster.now:
                del self.retire_at[node_id]
                cluster.retire(node_id)
