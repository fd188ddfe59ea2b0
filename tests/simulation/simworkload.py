"""Random lock traffic, proposed the way the lock service proposes it.

Clients send acquire, release, renew and cancel commands to a node they believe is the
leader (sometimes a stale one, whose entries must never commit); the node stamps
`now_ms` from its own clock. Clients learn grants and queued requests from the
committed history, as a real client learns them from the HTTP reply, and reuse those
tokens, now and then deliberately stale. Every leader proposes `expire` once its table's
next lease deadline has passed, as the lock service does, and not again until that
entry is applied (an unapplied expire may already settle the deadline).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from simcheck import outcome_kind
from simcluster import Cluster

from distcluster_worker.raft.node import NotLeader

MAX_UNCOMMITTED = 32
TTLS_MS = (30, 100, 300, 2000)
WAITS_MS = (0, 0, 50, 200, 1000)


@dataclass(frozen=True)
class WorkloadConfig:
    resources: int = 3
    owners: int = 4
    rate: float = 0.3
    max_batch: int = 3
    read_rate: float = 0.03
    stale_rate: float = 0.1


@dataclass
class LockClients:
    rng: random.Random
    config: WorkloadConfig = field(default_factory=WorkloadConfig)
    grants: dict[int, tuple[str, str]] = field(default_factory=dict)
    queued: dict[str, str] = field(default_factory=dict)
    seen_index: int = 0
    requests: int = 0
    proposed: int = 0
    refused_not_leader: int = 0

    def step(self, cluster: Cluster) -> None:
        self.learn(cluster)
        self.propose_expiries(cluster)
        if self.rng.random() < self.config.read_rate:
            self.read(cluster)
        if self.rng.random() < self.config.rate:
            self.send_commands(cluster)

    # -- learning from the committed history ---------------------------------------------

    def learn(self, cluster: Cluster) -> None:
        history = cluster.locks
        while self.seen_index < history.applied:
            self.seen_index += 1
            for outcome in history.outcomes.get(self.seen_index, []):
                self.learn_one(outcome)

    def learn_one(self, outcome: Any) -> None:
        kind = outcome_kind(outcome)
        request_id = getattr(outcome, "request_id", None)
        if kind == "granted":
            self.grants[int(outcome.token)] = (outcome.resource, outcome.owner)
        elif kind in ("released", "expired"):
            self.grants.pop(int(getattr(outcome, "token", -1)), None)
        if kind == "queued" and request_id is not None:
            self.queued[request_id] = getattr(outcome, "resource", "")
        elif request_id is not None:
            self.queued.pop(request_id, None)

    # -- proposing -------------------------------------------------------------------------

    def pick_target(self, cluster: Cluster) -> str | None:
        """Usually a leader (any, even a stale one), sometimes any live node."""
        leaders = cluster.leaders()
        if leaders and self.rng.random() < 0.9:
            return self.rng.choice(leaders)
        live = [n.node_id for n in cluster.live_nodes()]
        return self.rng.choice(live) if live else None

    def send_commands(self, cluster: Cluster) -> None:
        target = self.pick_target(cluster)
        if target is None:
            return
        raft = cluster.nodes[target].core()
        if raft.last_index - raft.commit_index >= MAX_UNCOMMITTED:
            return  # clients wait for replies: the backlog a node can build is bounded
        now_ms = cluster.now_ms(target)
        count = self.rng.randint(1, self.config.max_batch)
        commands = [self.command(now_ms) for _ in range(count)]
        self.propose(cluster, target, commands)

    def propose(self, cluster: Cluster, target: str, commands: list[dict[str, Any]]) -> list[int]:
        try:
            indexes = cluster.propose(target, commands)
        except NotLeader:
            self.refused_not_leader += 1
            return []
        self.proposed += len(commands)
        return indexes

    def propose_expiries(self, cluster: Cluster) -> None:
        for node_id in cluster.leaders():
            node = cluster.nodes[node_id]
            deadline = node.table.next_deadline_ms()
            now_ms = cluster.now_ms(node_id)
            if deadline is None or deadline > now_ms:
                continue
            if node.applied < node.expire_index:
                continue  # the last expire is not applied yet: it may settle this deadline
            indexes = self.propose(cluster, node_id, [{"op": "expire", "now_ms": now_ms}])
            node.expire_index = max(indexes, default=0)

    def read(self, cluster: Cluster) -> None:
        leader = cluster.leader()
        if leader is None:
            return
        try:
            cluster.read_index(leader)
        except NotLeader:
            self.refused_not_leader += 1

    # -- commands --------------------------------------------------------------------------

    def command(self, now_ms: int) -> dict[str, Any]:
        roll = self.rng.random()
        if roll < 0.5 or not self.grants:
            return self.acquire(now_ms)
        if roll < 0.75:
            return self.release(now_ms)
        if roll < 0.92:
            return self.renew(now_ms)
        return self.cancel(now_ms)

    def next_id(self) -> str:
        self.requests += 1
        return f"q{self.requests}"

    def acquire(self, now_ms: int) -> dict[str, Any]:
        return {
            "op": "acquire",
            "request_id": self.next_id(),
            "resource": f"r{self.rng.randrange(self.config.resources)}",
            "owner": f"o{self.rng.randrange(self.config.owners)}",
            "mode": "shared" if self.rng.random() < 0.4 else "exclusive",
            "ttl_ms": self.rng.choice(TTLS_MS),
            "wait_ms": self.rng.choice(WAITS_MS),
            "now_ms": now_ms,
        }

    def held(self) -> tuple[int, str, str]:
        token = self.rng.choice(sorted(self.grants))
        resource, owner = self.grants[token]
        if self.rng.random() < self.config.stale_rate:
            token = max(0, token - self.rng.randint(1, 5))
        return token, resource, owner

    def release(self, now_ms: int) -> dict[str, Any]:
        token, resource, owner = self.held()
        return {
            "op": "release",
            "request_id": self.next_id(),
            "resource": resource,
            "owner": owner,
            "token": token,
            "now_ms": now_ms,
        }

    def renew(self, now_ms: int) -> dict[str, Any]:
        command = self.release(now_ms)
        command.update(op="renew", ttl_ms=self.rng.choice(TTLS_MS))
        return command

    def cancel(self, now_ms: int) -> dict[str, Any]:
        if self.queued and self.rng.random() < 0.8:
            target = self.rng.choice(sorted(self.queued))
        else:
            target = f"q{self.rng.randint(1, max(1, self.requests))}"
        return {"op": "cancel", "request_id": target, "now_ms": now_ms}
