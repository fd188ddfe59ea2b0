"""Stateful test: 3 nodes, 2 keys, one home directory, random reads, writes, deletes,
evictions, crashes, partitions and time.

Each node keeps its lines (state, version, lease end); the machine carries out the
directory's plans the way a shell would, with the node-side table of `transition`, and
reachable nodes renew their copies in batches. A partitioned node keeps serving its lines
until their leases run out and neither receives an invalidation nor renews, so the only
thing that keeps it from serving a stale value is the lease.
Checked after every step: the directory's invariants, at most one valid M/E copy per key
among the nodes and then no valid S copy, and (a register check) that every read, local
hit or miss, returns the version of the latest completed write.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from distcluster_worker.coherence import Directory, Event, MesiState, Plan, transition

NODES = ("a", "b", "c")
KEYS = ("k1", "k2")
LEASE = 5


@dataclass
class Held:
    state: MesiState
    version: int
    lease_until: int
    grant: int


class CoherenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.home = Directory("home", lease_ticks=LEASE)
        self.now = 0
        self.lines: dict[tuple[str, str], Held] = {}
        self.memory = dict.fromkeys(KEYS, 0)
        self.latest = dict.fromkeys(KEYS, 0)
        self.cut: set[str] = set()

    def live(self, node: str, key: str) -> Held | None:
        held = self.lines.get((node, key))
        return held if held is not None and held.lease_until > self.now else None

    def on_event(self, node: str, key: str, event: Event) -> None:
        held = self.live(node, key)
        if held is None:
            return
        held.state = transition(held.state, event).new_state
        if not held.state.valid:
            del self.lines[(node, key)]

    @rule(node=st.sampled_from(NODES), key=st.sampled_from(KEYS))
    def read(self, node: str, key: str) -> None:
        held = self.live(node, key)
        if held is not None:
            assert held.version == self.latest[key], "a local hit served a stale value"
            return
        if node in self.cut:
            return
        plan = self.home.request_read(key, node, self.now)
        assert isinstance(plan, Plan)
        if plan.supplier in self.cut:  # no answer: the shell reports it and reads memory
            plan = self.home.supplier_failed(plan.txn_id, self.now)
        supplier = self.live(plan.supplier, key) if plan.supplier else None
        version = supplier.version if supplier is not None else self.memory[key]
        for owner in plan.downgrade:
            self.on_event(owner, key, Event.BUS_READ)
        done = self.home.complete(plan.txn_id, self.now)
        assert version == self.latest[key] == done.version, "a read returned a stale value"
        if done.state.valid:
            self.lines[(node, key)] = Held(done.state, version, done.lease_until, done.grant)

    @rule(node=st.sampled_from(NODES), key=st.sampled_from(KEYS), delete=st.booleans())
    def write(self, node: str, key: str, delete: bool) -> None:
        if node in self.cut:
            return
        request = self.home.request_delete if delete else self.home.request_write
        plan = request(key, node, self.now)
        assert isinstance(plan, Plan)
        for peer in sorted(plan.invalidate):
            if peer not in self.cut:
                self.on_event(peer, key, Event.BUS_INVALIDATE)
                self.lines.pop((peer, key), None)
                self.home.ack_invalidate(plan.txn_id, peer, self.now)
        if not self.home.may_complete(plan.txn_id, self.now):
            self.advance(plan.wait_until - self.now)  # the writer waits out the leases
        self.memory[key] = plan.version
        done = self.home.complete(plan.txn_id, self.now)
        self.latest[key] = done.version
        self.lines.pop((node, key), None)
        if done.state.valid:
            self.lines[(node, key)] = Held(done.state, done.version, done.lease_until, done.grant)

    @rule(node=st.sampled_from(NODES), key=st.sampled_from(KEYS))
    def evict(self, node: str, key: str) -> None:
        held = self.lines.pop((node, key), None)
        if held is not None and node not in self.cut:
            self.home.evicted(key, node, held.grant, self.now)

    @rule(node=st.sampled_from(NODES))
    def partition(self, node: str) -> None:
        self.cut.add(node)

    @rule(node=st.sampled_from(NODES))
    def restart(self, node: str) -> None:
        """A crashed or healed node comes back empty (the home learns nothing of it)."""
        self.cut.discard(node)
        for key in KEYS:
            self.lines.pop((node, key), None)

    @rule(node=st.sampled_from(NODES))
    def renew(self, node: str) -> None:
        """A reachable node renews everything it holds in one batch."""
        if node in self.cut:
            return
        mine = [
            (k, h) for (n, k), h in self.lines.items() if n == node and h.lease_until > self.now
        ]
        leases = self.home.renew_all(node, [(k, h.grant) for k, h in mine], self.now)
        for (key, held), lease in zip(mine, leases, strict=True):
            if lease is None:
                del self.lines[(node, key)]
            else:
                held.lease_until = lease

    @rule(ticks=st.integers(1, 4))
    def advance(self, ticks: int) -> None:
        self.now += max(ticks, 0)
        for place in [p for p, h in self.lines.items() if h.lease_until <= self.now]:
            del self.lines[place]

    @invariant()
    def coherent(self) -> None:
        self.home.check_invariants()
        for key in KEYS:
            valid = [h for n in NODES if (h := self.live(n, key)) is not None]
            exclusive = [h for h in valid if h.state.exclusive]
            assert len(exclusive) <= 1, f"{key}: several M/E copies"
            assert not exclusive or len(valid) == 1, f"{key}: S beside an M/E copy"
            assert all(h.version <= self.latest[key] for h in valid)


CoherenceMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None
)
test_coherence_machine = CoherenceMachine.TestCase
