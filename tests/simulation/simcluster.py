"""A cluster of pure Raft cores with lock tables, wired to the simulated network.

Each node is driven exactly as `lock_role.driver.RaftDriver` drives it: after every
input (a tick, a delivered message, a proposal) every pending `Ready` is drained in the
shell's order — persist the snapshot, the entries (with truncation) and the hard state,
restore the table from a received snapshot, release the messages to the network, apply
the committed entries, hand out read states, `advance`, then compact when the log grew
past `snapshot_entries`. The stable storage is an in-memory twin of the Redis one and is
all that survives a crash.

The cluster reports every event to the checkers as it happens, so a violation surfaces
at the step that caused it. Crashes may also tear a `Ready` in half (before persisting,
after persisting, after sending, after applying) to exercise every crash point the real
shell has.

Membership. Only the first `ClusterConfig.voters` nodes form the bootstrap
configuration; the others start as joining nodes (`RaftConfig.join`) and sit idle
until a membership change adds them. A node the operator would delete after its
removal is *retired*: down for good (no fault restarts it) until it is added again,
when it comes back with its stable storage, as a StatefulSet pod with its Redis keys
would. Two membership rules are checked from stable storage, never from the core's
own bookkeeping: a node campaigns only while the configuration its stored log implies
makes it a voter, and a config entry is only ever written after a committed one.
"""

from __future__ import annotations

import json
import random
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from simcheck import CHECKPOINT_EVERY, LockReference, LogView, RaftChecker, violation
from simnet import NetConfig, SimNetwork

from distcluster_worker.locks import LockTable
from distcluster_worker.raft.confchange import (
    NO_MEMBERSHIP,
    ConfChange,
    Membership,
    decode_membership,
    snapshot_membership,
)
from distcluster_worker.raft.messages import (
    AppendResponse,
    Entry,
    HardState,
    Message,
    Ready,
    Snapshot,
    SnapshotResponse,
    VoteRequest,
    VoteResponse,
)
from distcluster_worker.raft.node import RaftConfig, RaftNode, Restored

CRASH_POINTS = ("before_persist", "after_persist", "after_send", "after_apply")
TICK_MS = 10
MAX_READY_ROUNDS = 50
TRACE_EVENTS = 200


# Every outcome of a finished request stays in the table's dedup map up to this many, and
# the snapshot carries them all: small keeps snapshots cheap and exercises eviction.
DEDUP_CAPACITY = 4


def new_table() -> LockTable:
    return LockTable(dedup_capacity=DEDUP_CAPACITY)


class CrashPointError(Exception):
    """Raised inside a node's drain when a scheduled crash point is reached."""


# -- stable storage ---------------------------------------------------------------------


@dataclass
class SimStorage:
    """In-memory stable storage, with the truncation rules of `InMemoryRaftStorage`."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    written: bool = False

    @property
    def snapshot_index(self) -> int:
        return self.snapshot.last_index if self.snapshot else 0

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot_index

    def term_at(self, index: int) -> int | None:
        if index == 0:
            return 0
        if self.snapshot is not None and index == self.snapshot.last_index:
            return self.snapshot.last_term
        offset = index - (self.entries[0].index if self.entries else index + 1)
        if 0 <= offset < len(self.entries):
            return self.entries[offset].term
        return None

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        kept_after_snapshot: Sequence[Entry],
    ) -> None:
        self.written = True
        if snapshot is not None:
            self.snapshot, self.entries = snapshot, list(kept_after_snapshot)
        if entries:
            first = entries[0].index
            if first > self.last_index + 1:
                raise violation("no gaps in the log", f"stored up to {self.last_index}, {first}")
            self.entries = [e for e in self.entries if e.index < first] + list(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def compact(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.entries = [e for e in self.entries if e.index > snapshot.last_index]

    def restored(self) -> Restored | None:
        if not self.written:
            return None
        return Restored(self.hard_state, self.snapshot, list(self.entries))


# -- one node -------------------------------------------------------------------------------


@dataclass
class SimNode:
    node_id: str
    storage: SimStorage = field(default_factory=SimStorage)
    raft: RaftNode | None = None
    table: Any = None
    applied: int = 0
    incarnation: int = 0
    crash_at: str | None = None
    expire_index: int = 0
    retired: bool = False

    @property
    def alive(self) -> bool:
        return self.raft is not None

    def core(self) -> RaftNode:
        if self.raft is None:
            raise RuntimeError(f"{self.node_id} is down")
        return self.raft


@dataclass
class ClusterConfig:
    size: int = 3
    election_timeout_ticks: int = 10
    heartbeat_ticks: int = 1
    max_entries_per_append: int = 8
    max_inflight_appends: int = 4
    max_append_bytes: int = 24 * 1024
    pre_vote: bool = True
    check_quorum: bool = True
    snapshot_entries: int = 20
    clock_skew_ms: int = 0
    net: NetConfig = field(default_factory=NetConfig)
    voters: int = 0  # bootstrap voters: the first `voters` nodes (0: all of them)


TraceEvent = tuple[int, str, object]


class Cluster:
    """Nodes, network, clock and checkers; one `step()` is one tick of the shared clock."""

    def __init__(self, seed: int, config: ClusterConfig) -> None:
        self.seed = seed
        self.config = config
        self.ids = tuple(f"n{i}" for i in range(1, config.size + 1))
        self.initial_voters = self.ids[: config.voters or config.size]
        self.rng = random.Random(f"{seed}:cluster")
        self.net = SimNetwork(self.ids, random.Random(f"{seed}:net"), config.net)
        self.nodes = {nid: SimNode(nid) for nid in self.ids}
        self.skew_ms = {nid: self.rng.randint(0, config.clock_skew_ms) for nid in self.ids}
        self.raft_checker = RaftChecker()
        self.locks = LockReference(new_table, LockTable.restore)
        self.now = 0
        self.trace: deque[TraceEvent] = deque(maxlen=TRACE_EVENTS)
        self.counts: Counter[str] = Counter()
        self.delivered_kinds: dict[str, int] = {}
        self.reads: dict[tuple[str, int], int] = {}
        self._read_ctx = 0
        self._campaigns_checked: set[tuple[str, int, str, int]] = set()
        self.roles: dict[str, str] = {}

    def boot(self) -> Cluster:
        for nid in self.ids:
            self.start(nid)
        return self

    # -- lifecycle ---------------------------------------------------------------------

    def raft_config(self, node_id: str) -> RaftConfig:
        c = self.config
        return RaftConfig(
            node_id=node_id,
            voters=self.initial_voters,
            join=node_id not in self.initial_voters,
            election_timeout_ticks=c.election_timeout_ticks,
            heartbeat_ticks=c.heartbeat_ticks,
            max_entries_per_append=c.max_entries_per_append,
            max_inflight_appends=c.max_inflight_appends,
            max_append_bytes=c.max_append_bytes,
            pre_vote=c.pre_vote,
            check_quorum=c.check_quorum,
        )

    def start(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.incarnation += 1
        rng = random.Random(f"{self.seed}:{node_id}:{node.incarnation}")
        restored = node.storage.restored()
        node.raft = RaftNode(self.raft_config(node_id), rng, restored)
        snap = node.storage.snapshot
        node.table = LockTable.restore(snap.data) if snap else new_table()
        node.applied = snap.last_index if snap else 0
        node.crash_at = None
        node.expire_index = 0
        self.record("start", node_id)
        self.roles.pop(node_id, None)
        raft = node.core()
        self.raft_checker.on_restart(node_id, raft.term, raft.commit_index)
        self.after_input(node)
        if node.alive:
            self.observe(node)

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if not node.alive:
            return
        node.raft, node.table = None, None
        self.net.drop_to(node_id)
        self.raft_checker.forget_live(node_id)
        self.reads = {key: v for key, v in self.reads.items() if key[0] != node_id}
        self.record("crash", node_id)

    def crash_at_next_ready(self, node_id: str, point: str) -> None:
        self.nodes[node_id].crash_at = point

    def retire(self, node_id: str) -> None:
        """The operator deleted the node after its removal: down until added again."""
        self.crash(node_id)
        self.nodes[node_id].retired = True
        self.record("retire", node_id)

    def recommission(self, node_id: str) -> None:
        """Bring a retired node back, with its stable storage, before it is added again."""
        node = self.nodes[node_id]
        node.retired = False
        if not node.alive:
            self.start(node_id)

    # -- inputs ------------------------------------------------------------------------

    def step(self) -> None:
        """Advance the clock one tick: deliver what is due, then tick every live node."""
        self.now += 1
        for msg in self.net.due(self.now):
            self.deliver(msg)
        nodes = self.live_nodes()
        self.rng.shuffle(nodes)  # no node always ticks first
        for node in nodes:
            if node.alive:
                node.core().tick()
                self.after_input(node)

    def deliver(self, msg: Message) -> None:
        node = self.nodes[msg.dst]
        if not node.alive:
            return
        kind = type(msg).__name__
        self.delivered_kinds[kind] = self.delivered_kinds.get(kind, 0) + 1
        self.record("recv", msg)
        node.core().step(msg)
        self.after_input(node)

    def propose(self, node_id: str, commands: Sequence[dict[str, Any]]) -> list[int]:
        """Propose on one node (raises NotLeader there); commands become JSON entries."""
        node = self.nodes[node_id]
        datas = [json.dumps(c, sort_keys=True) for c in commands]
        raft = node.core()
        indexes = raft.propose_many(datas) if len(datas) > 1 else [raft.propose(datas[0])]
        self.record("propose", (node_id, indexes, [c.get("op") for c in commands]))
        self.after_input(node)
        return indexes

    def propose_conf_change(self, node_id: str, change: ConfChange) -> int:
        """Propose a membership change on one node (it raises what the core raises)."""
        node = self.nodes[node_id]
        index = node.core().propose_conf_change(change)
        self.record(f"conf {change.op}", (node_id, change.node_id, index))
        self.after_input(node)
        return index

    def transfer_leadership(self, node_id: str, target: str) -> None:
        node = self.nodes[node_id]
        node.core().transfer_leadership(target)
        self.record("transfer", (node_id, target))
        self.after_input(node)

    def read_index(self, node_id: str) -> int:
        node = self.nodes[node_id]
        self._read_ctx += 1
        ctx = self._read_ctx
        node.core().read_index(ctx)
        self.reads[(node_id, ctx)] = self.raft_checker.max_commit
        self.record("read_index", (node_id, ctx))
        self.after_input(node)
        return ctx

    # -- the shell's Ready loop -----------------------------------------------------------

    def after_input(self, node: SimNode) -> None:
        """Drain the node; observe it if anything changed (a term, a role, a commit).

        Every change a checker cares about comes with a Ready: a new term or vote is
        hard state, a new leader sends appends, a commit hands out entries to apply.
        """
        try:
            changed = self.drain(node)
        except CrashPointError:
            self.crash(node.node_id)
            return
        if changed:
            self.observe(node)

    def drain(self, node: SimNode) -> bool:
        raft = node.core()
        rounds = 0
        while raft.has_ready():
            rounds += 1
            if rounds > MAX_READY_ROUNDS:
                raise violation("ready settles", f"{node.node_id} still has a Ready")
            self.handle_ready(node, raft, raft.ready())
        return rounds > 0

    def handle_ready(self, node: SimNode, raft: RaftNode, ready: Ready) -> None:
        self.maybe_crash(node, "before_persist")
        self.persist(node, raft, ready)
        self.maybe_crash(node, "after_persist")
        if ready.snapshot is not None:
            self.install_snapshot(node, ready.snapshot)
        for msg in ready.messages:
            self.send(node, msg)
        self.maybe_crash(node, "after_send")
        for entry in ready.committed_entries:
            self.apply(node, entry)
        for state in ready.read_states:
            self.check_read(node.node_id, state.ctx, state.index)
        self.maybe_crash(node, "after_apply")
        raft.advance(ready)
        self.maybe_compact(node, raft)

    def maybe_crash(self, node: SimNode, point: str) -> None:
        if node.crash_at == point:
            self.record("torn ready", (node.node_id, point))
            raise CrashPointError(point)

    def persist(self, node: SimNode, raft: RaftNode, ready: Ready) -> None:
        storage = node.storage
        kept: list[Entry] = []
        if ready.snapshot is not None:
            kept = list(raft.entries_from(ready.snapshot.last_index + 1, raft.last_index + 1))
        if ready.entries:
            self.check_truncation(node, ready.entries)
            prev = storage.term_at(ready.entries[0].index - 1)
            if ready.snapshot is not None:
                prev = _term_before(ready.entries[0].index, ready.snapshot, kept)
            self.raft_checker.on_log_write(node.node_id, ready.entries, prev)
        storage.save(ready.hard_state, ready.entries, ready.snapshot, kept)
        if ready.hard_state is not None:
            self.raft_checker.on_hard_state(node.node_id, ready.hard_state)
        written = [e for e in ready.entries if e.kind == "config"]
        if written:
            self.check_config_writes(node, written)

    def check_config_writes(self, node: SimNode, written: Sequence[Entry]) -> None:
        """Each config entry written must follow a committed one (or none in the log)."""
        configs = [e for e in node.storage.entries if e.kind == "config"]
        for before, entry in zip(configs, configs[1:], strict=False):
            if entry in written:
                self.raft_checker.on_config_write(node.node_id, entry, before)

    def check_truncation(self, node: SimNode, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        if first > node.storage.last_index:
            return  # a plain append
        new_terms = {e.index: e.term for e in entries}
        for old in node.storage.entries:
            if old.index >= first:
                self.raft_checker.on_truncate(
                    node.node_id, old.index, old.term, new_terms.get(old.index)
                )

    def install_snapshot(self, node: SimNode, snap: Snapshot) -> None:
        self.record("install snapshot", (node.node_id, snap.last_index, snap.last_term))
        if snap.last_index < node.applied:
            raise violation(
                "snapshot moves forward",
                f"{node.node_id} applied {node.applied}, got snapshot at {snap.last_index}",
            )
        self.locks.expect_table(node.node_id, snap.last_index, snap.data)
        node.table = LockTable.restore(snap.data)
        node.applied = snap.last_index

    def send(self, node: SimNode, msg: Message) -> None:
        if msg.src != node.node_id or msg.dst not in self.nodes or msg.dst == msg.src:
            raise violation("message addressing", f"{node.node_id} sent {msg}")
        if isinstance(msg, VoteRequest):
            self.check_campaigner(node, msg.term, "pre-vote" if msg.pre_vote else "vote")
        elif isinstance(msg, VoteResponse):
            self.raft_checker.on_vote_sent(msg, node.storage.hard_state)
        elif isinstance(msg, SnapshotResponse) or (isinstance(msg, AppendResponse) and msg.success):
            self.check_ack_durable(node, msg)
        self.record("send", msg)
        self.net.send(msg, self.now)

    def check_ack_durable(self, node: SimNode, msg: AppendResponse | SnapshotResponse) -> None:
        if msg.match_index > node.storage.last_index:
            raise violation(
                "ack durable before sent",
                f"{node.node_id} acked {msg.match_index}, stored {node.storage.last_index}",
            )

    def apply(self, node: SimNode, entry: Entry) -> None:
        if entry.index != node.applied + 1:
            raise violation(
                "apply in order", f"{node.node_id} applied {node.applied}, then {entry.index}"
            )
        stored = node.storage.term_at(entry.index)
        if stored != entry.term and entry.index > node.storage.snapshot_index:
            raise violation(
                "applied entry is stored",
                f"{node.node_id} applies term {entry.term} at {entry.index}, stored {stored}",
            )
        self.raft_checker.on_apply(node.node_id, entry)
        self.locks.catch_up(self.raft_checker.applied)
        if entry.kind == "command":
            outcomes = node.table.apply(entry.index, json.loads(entry.data))
            self.check_outcomes(node.node_id, entry.index, outcomes)
        node.applied = entry.index
        if entry.index % CHECKPOINT_EVERY == 0:
            self.locks.expect_table(node.node_id, entry.index, node.table.snapshot())

    def check_outcomes(self, node_id: str, index: int, outcomes: Sequence[Any]) -> None:
        mine = list(outcomes)
        want = self.locks.outcomes.get(index, [])
        if mine != want:
            raise violation("deterministic outcomes", f"{node_id} at {index}: {mine} vs {want}")

    def check_read(self, node_id: str, ctx: int, index: int) -> None:
        floor = self.reads.pop((node_id, ctx), None)
        if floor is None:
            return
        if index < floor:
            raise violation(
                "linearizable read", f"{node_id} read ctx {ctx} at {index} < commit {floor}"
            )
        self.counts["read confirmed"] += 1

    def maybe_compact(self, node: SimNode, raft: RaftNode) -> None:
        applied = raft.applied_index
        if applied != node.applied:
            raise violation(
                "applied index agrees", f"{node.node_id} core {applied}, shell {node.applied}"
            )
        if applied - raft.first_index + 1 < self.config.snapshot_entries:
            return
        text = node.table.snapshot()
        self.locks.expect_table(node.node_id, applied, text)
        raft.compact(applied, text)
        snap = raft.snapshot
        if snap is not None:
            self.record("compact", (node.node_id, snap.last_index))
            node.storage.compact(snap)

    # -- observation -----------------------------------------------------------------------

    def observe(self, node: SimNode) -> None:
        raft = node.core()
        self.check_storage_agrees(node, raft)
        if raft.state != "follower":
            self.check_campaigner(node, raft.term, raft.state)
        elif self.roles.get(node.node_id) == "leader" and not raft.promotable:
            self.record("removed leader stepped down", node.node_id)
        self.roles[node.node_id] = raft.state
        self.raft_checker.on_role(node.node_id, raft.state, raft.term, raft)
        self.raft_checker.on_commit(
            node.node_id, raft.commit_index, raft.term, raft, self.leader_logs
        )

    def leader_logs(self) -> Iterator[tuple[str, int, LogView]]:
        for node in self.live_nodes():
            raft = node.core()
            if raft.state == "leader":
                yield node.node_id, raft.term, raft

    def check_storage_agrees(self, node: SimNode, raft: RaftNode) -> None:
        """Once every Ready is handled, stable storage holds exactly the core's state."""
        hs = node.storage.hard_state
        stored_last = node.storage.last_index
        if (hs.term, hs.voted_for) != (raft.term, raft.voted_for):
            raise violation(
                "hard state persisted",
                f"{node.node_id} core term {raft.term} vote {raft.voted_for}, stored {hs}",
            )
        if hs.commit > stored_last:
            raise violation(
                "commit within the stored log",
                f"{node.node_id} stored commit {hs.commit} beyond stored log {stored_last}",
            )
        if stored_last != raft.last_index or node.storage.term_at(stored_last) != raft.term_at(
            stored_last
        ):
            raise violation(
                "log persisted",
                f"{node.node_id} core last {raft.last_index} term "
                f"{raft.term_at(raft.last_index)}, stored last {stored_last} term "
                f"{node.storage.term_at(stored_last)}",
            )

    def check_campaigner(self, node: SimNode, term: int, how: str) -> None:
        """Only a voter of its own configuration (as its stored log says) may campaign.

        Checked when a vote request leaves and when a node is first seen campaigning or
        leading in a term (a lone voter wins without sending anything); a leader is
        first seen right after its election, before it could propose its own removal.
        """
        # A campaign is checked again whenever the log changed; a leader only once, as it
        # may append its own removal later.
        log_at = 0 if how == "leader" else node.storage.last_index
        key = (node.node_id, term, how, log_at)
        if key in self._campaigns_checked:
            return
        self._campaigns_checked.add(key)
        membership = self.stored_membership(node)
        if not membership.is_voter(node.node_id):
            raise violation(
                "only voters campaign",
                f"{node.node_id} ran a {how} campaign in term {term} with voters "
                f"{membership.voters} learners {membership.learners}",
            )

    def stored_membership(self, node: SimNode) -> Membership:
        """The latest config entry in the stored log, else the snapshot's, else bootstrap."""
        for entry in reversed(node.storage.entries):
            if entry.kind == "config":
                return decode_membership(entry.data)
        snap = node.storage.snapshot
        recorded = snapshot_membership(snap.voters, snap.learners) if snap else None
        return recorded or self.bootstrap_membership(node.node_id)

    def bootstrap_membership(self, node_id: str) -> Membership:
        if node_id in self.initial_voters:
            return Membership.of(self.initial_voters)
        return NO_MEMBERSHIP

    def appliers(self) -> list[SimNode]:
        """The nodes that must apply every committed entry: members of the leader's
        configuration (every node, without membership changes), retired ones aside."""
        leader = self.leader()
        members = self.nodes[leader].core().membership.members if leader else self.ids
        return [self.nodes[n] for n in members if not self.nodes[n].retired]

    def check_tables(self) -> None:
        """Every live table equals the reference at its applied index (costly: run ends)."""
        for node in self.live_nodes():
            self.locks.expect_table(node.node_id, node.applied, node.table.snapshot())

    def check_logs_fully(self) -> None:
        """The stored log of every live node matches its core entry for entry."""
        for node in self.live_nodes():
            raft = node.core()
            for entry in node.storage.entries:
                if entry.index >= raft.first_index and raft.term_at(entry.index) != entry.term:
                    raise violation(
                        "log persisted",
                        f"{node.node_id} index {entry.index} stored term {entry.term}, core "
                        f"{raft.term_at(entry.index)}",
                    )

    # -- queries ---------------------------------------------------------------------------

    def live_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raft is not None]

    def leaders(self) -> list[str]:
        return [n.node_id for n in self.live_nodes() if n.core().state == "leader"]

    def leader(self) -> str | None:
        """The live leader of the highest term, if any."""
        best: tuple[int, str] | None = None
        for nid in self.leaders():
            term = self.nodes[nid].core().term
            if best is None or term > best[0]:
                best = (term, nid)
        return best[1] if best else None

    def now_ms(self, node_id: str) -> int:
        return self.now * TICK_MS + self.skew_ms[node_id]

    def record(self, kind: str, detail: object) -> None:
        self.trace.append((self.now, kind, detail))
        self.counts[kind] += 1

    def format_trace(self, last: int = 40) -> str:
        """Node status, the recent faults and proposals, then the last events of all kinds."""
        events = list(self.trace)
        control = [e for e in events if e[1] not in ("send", "recv")][-15:]
        lines = ["nodes:"] + [f"  {self.describe(n)}" for n in self.nodes.values()]
        lines.append(f"network cuts: {self.net.describe_cuts()}")
        lines.append("recent faults, proposals and snapshots:")
        lines += [_event_line(e) for e in control]
        lines.append(f"last {last} events:")
        lines += [_event_line(e) for e in events[-last:]]
        return "\n".join(lines)

    def describe(self, node: SimNode) -> str:
        if node.raft is None:
            down = "retired" if node.retired else "down"
            return f"{node.node_id} {down} (stored term {node.storage.hard_state.term})"
        r = node.raft
        return (
            f"{node.node_id} {r.state} term {r.term} commit {r.commit_index} applied "
            f"{node.applied} log {r.first_index}..{r.last_index} voters {','.join(r.voters)}"
            f" learners {','.join(r.learners) or '-'}"
        )

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def heal(self) -> None:
        self.net.heal()
        self.record("heal", "")


def _term_before(first: int, snap: Snapshot, kept: Sequence[Entry]) -> int | None:
    if first - 1 == snap.last_index:
        return snap.last_term
    for entry in kept:
        if entry.index == first - 1:
            return entry.term
    return None


def _event_line(event: TraceEvent) -> str:
    step, kind, detail = event
    return f"  step {step:4d} {kind:<16} {_short(detail)}"


def _short(detail: object) -> str:
    text = repr(detail)
    return text if len(text) <= 160 else text[:157] + "..."
