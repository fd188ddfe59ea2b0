"""A tiny in-test cluster for the Raft scenario tests (imported by the tests here).

`Cluster` plays the shell for every node: it drains `ready()`, persists into an
in-memory `MemStorage` exactly as `Ready`'s docstring says, records what each node
applied, and delivers messages between nodes (unless a link is cut). It is a helper
for readable scenarios, not the randomized simulator (that lives in tests/simulation).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from distcluster_worker.raft.messages import (
    Entry,
    HardState,
    Message,
    ReadState,
    Ready,
    Snapshot,
)
from distcluster_worker.raft.node import RaftConfig, RaftNode, Restored

M = TypeVar("M")


@dataclass
class MemStorage:
    """Stable storage of one node, following the `Ready` persistence rules."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def persist(self, ready: Ready) -> None:
        if ready.snapshot is not None:
            self._persist_snapshot(ready.snapshot)
        if ready.entries:
            first = ready.entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(ready.entries)
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state

    def _persist_snapshot(self, snap: Snapshot) -> None:
        match = [e for e in self.entries if e.index == snap.last_index]
        if match and match[0].term == snap.last_term:
            self.entries = [e for e in self.entries if e.index > snap.last_index]
        else:
            self.entries = []
        self.snapshot = snap

    def restored(self) -> Restored:
        return Restored(self.hard_state, self.snapshot, list(self.entries))


def config(node_id: str, voters: Iterable[str], **overrides: object) -> RaftConfig:
    return RaftConfig(node_id=node_id, voters=tuple(voters), **overrides)  # type: ignore[arg-type]


def drain(node: RaftNode, storage: MemStorage | None = None) -> Ready:
    """Persist and advance everything the node has; return it merged into one Ready."""
    total = Ready()
    while node.has_ready():
        ready = node.ready()
        if storage is not None:
            storage.persist(ready)
        total.hard_state = ready.hard_state or total.hard_state
        total.entries += ready.entries
        total.snapshot = ready.snapshot or total.snapshot
        total.committed_entries += ready.committed_entries
        total.messages += ready.messages
        total.read_states += ready.read_states
        node.advance(ready)
    return total


class Cluster:
    """Nodes wired together through an in-memory network that can cut links.

    `voters` is the bootstrap configuration (all of `ids` by default); the other nodes
    start with `join=True`, as a node being added to a running cluster does.
    """

    def __init__(
        self,
        ids: Iterable[str] = ("a", "b", "c"),
        seed: int = 1,
        voters: Iterable[str] | None = None,
        **cfg: object,
    ):
        self.ids = tuple(ids)
        self.voters = tuple(voters) if voters is not None else self.ids
        self.cfg = cfg
        self.seed = seed
        self.storage = {i: MemStorage() for i in self.ids}
        self.nodes: dict[str, RaftNode] = {}
        self.applied: dict[str, list[Entry]] = {i: [] for i in self.ids}
        self.installed: dict[str, list[Snapshot]] = {i: [] for i in self.ids}
        self.read_states: dict[str, list[ReadState]] = {i: [] for i in self.ids}
        self.cut: set[frozenset[str]] = set()
        self.in_flight: list[Message] = []
        for i in self.ids:
            self.start(i)

    def start(self, node_id: str, restored: Restored | None = None) -> RaftNode:
        rng = random.Random(f"{self.seed}-{node_id}")
        join = node_id not in self.voters
        node = RaftNode(config(node_id, self.voters, join=join, **self.cfg), rng, restored)
        self.nodes[node_id] = node
        return node

    def restart(self, node_id: str) -> RaftNode:
        self.applied[node_id] = []
        return self.start(node_id, self.storage[node_id].restored())

    def isolate(self, node_id: str) -> None:
        self.cut |= {frozenset((node_id, other)) for other in self.ids if other != node_id}

    def heal(self) -> None:
        self.cut.clear()

    def collect(self, node_id: str) -> list[Message]:
        ready = drain(self.nodes[node_id], self.storage[node_id])
        if ready.snapshot is not None:
            self.installed[node_id].append(ready.snapshot)
        self.applied[node_id] += ready.committed_entries
        self.read_states[node_id] += ready.read_states
        return ready.messages

    def deliver(self, msgs: Iterable[Message]) -> None:
        for msg in msgs:
            if frozenset((msg.src, msg.dst)) not in self.cut:
                self.nodes[msg.dst].step(msg)

    def stabilize(self, max_rounds: int = 200) -> None:
        """Drain and deliver until no node has anything more to say."""
        for _ in range(max_rounds):
            msgs = [m for i in self.ids for m in self.collect(i)]
            if not msgs:
                return
            self.deliver(msgs)
        raise AssertionError("cluster did not stabilize")

    def tick(self, node_id: str, times: int = 1) -> None:
        for _ in range(times):
            self.nodes[node_id].tick()

    def tick_all(self, times: int = 1) -> None:
        for _ in range(times):
            for i in self.ids:
                self.nodes[i].tick()
            self.stabilize()

    def elect(self, node_id: str) -> RaftNode:
        """Run `node_id`'s election timer out and let the election play out."""
        node = self.nodes[node_id]
        for _ in range(100):
            if node.state != "follower":
                break
            node.tick()
        self.stabilize()
        assert node.state == "leader", node.status()
        return node

    def leader(self) -> RaftNode:
        leaders = [n for n in self.nodes.values() if n.state == "leader"]
        assert len(leaders) == 1, [n.status() for n in self.nodes.values()]
        return leaders[0]


def new_node(
    node_id: str = "a",
    voters: Iterable[str] = ("a", "b", "c"),
    seed: int = 0,
    restored: Restored | None = None,
    **cfg: object,
) -> RaftNode:
    """A lone node for tests that hand-craft every message it receives."""
    return RaftNode(config(node_id, voters, **cfg), random.Random(seed), restored)


def restored(term: int, entries: Iterable[tuple[int, int]], **hard: object) -> Restored:
    """A restart state with the given term and log of (index, term) pairs."""
    log = [Entry(t, i, "command", f"e{i}") for i, t in entries]
    return Restored(HardState(term=term, **hard), None, log)  # type: ignore[arg-type]


def timeout(node: RaftNode, limit: int = 100) -> None:
    """Tick until the node leaves the follower state (its election timer fired)."""
    for _ in range(limit):
        if node.state != "follower":
            return
        node.tick()
    raise AssertionError("election timer never fired")


def sent(ready: Ready, kind: type[M], dst: str | None = None) -> list[M]:
    """The messages of one type in `ready`, optionally only those to `dst`."""
    return [m for m in ready.messages if isinstance(m, kind) and dst in (None, m.dst)]


def exchange(src: RaftNode, dst: RaftNode) -> Ready:
    """Drain `src`, deliver what it sent to `dst`, drain `dst` and return that Ready."""
    for msg in drain(src).messages:
        dst.step(msg)
    return drain(dst)
