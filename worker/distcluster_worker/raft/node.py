"""One Raft node as a pure state machine: `tick`, `step`, then `ready`/`advance`.

The shape is etcd's `RawNode`. The shell calls `tick()` at a fixed rate and
`step(msg)` for every message received, then drains `ready()`: it persists the
snapshot, entries and hard state, sends the messages, applies the committed entries,
hands out the read states, and calls `advance(ready)`. Nothing here does I/O or reads
a clock; randomness (election timeouts) comes only from the injected `random.Random`.

Choices worth knowing, each from the Raft thesis or etcd:

- PreVote (thesis 9.6): a node whose election timer fires first asks for pre-votes at
  term+1 without changing its term, so a node cut off from the cluster does not inflate
  terms and depose a healthy leader when it comes back.
- CheckQuorum and the leader lease (thesis 6.2, 9.6): a leader that has not heard from
  a majority within an election timeout steps down; a node that heard from a leader
  within the minimum election timeout ignores vote requests (pre-votes always, real
  votes under CheckQuorum) and does not bump its term for them.
- The leader counts itself towards a commit only up to its last *stable* index, so an
  entry is committed only once a majority has it on disk. Only entries of the current
  term are committed by counting (paper Figure 8); older ones follow.
- The leader's side of replication lives in `replication.py` (a `Replicator` per term
  of leadership) with per-follower flow control in `progress.py`: batching,
  pipelining, fast back-off by conflict term, snapshots for compacted entries.
- ReadIndex (thesis 6.4): a read records the commit index, then waits until a
  majority answered a message carrying a `read_seq` sent after the read arrived.
- A rejected AppendResponse carries the rejected `prev_log_index` in `match_index`, so
  the leader can tell a stale rejection from a fresh one.
- Membership changes (thesis chapter 4, one server at a time; see `confchange.py`):
  the configuration is the latest one in the log, committed or not, so it changes on
  append and reverts on truncation. A node campaigns only while it is a voter in it
  (etcd's "promotable"): learners, joining nodes and removed nodes never do. Messages
  are taken from anyone who may need to be heard: a leader we do not know yet (we may
  lag behind the entry that added it), a candidate (PreVote and the lease keep removed
  nodes from disrupting); only answers from non-members are dropped. A leader proposes
  a change only once its earlier change and an entry of its own term are committed,
  and steps down once its own removal is committed.
- Leadership transfer (thesis 3.10): the leader stops taking proposals, brings the
  target's log up to date, and sends it `TimeoutNow`; the target campaigns at once,
  without PreVote, with `transfer` set so voters grant it despite their lease. The
  transfer is abandoned after an election timeout.
- Invariants that must hold are checked with `errors.check`, which raises
  `RaftInvariantError`; odd but well-typed input (stale, duplicated, reordered or
  malformed messages) is ignored instead.

Persisting `Ready.snapshot`: the shell keeps its stored entries after the snapshot
only if its stored entry at `snapshot.last_index` has term `snapshot.last_term`, and
otherwise drops the whole stored log, as `RaftLog.install` does in memory.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from distcluster_worker.raft.confchange import (
    NO_MEMBERSHIP,
    ConfChange,
    Membership,
    decode_membership,
    encode_membership,
    snapshot_membership,
)
from distcluster_worker.raft.errors import (
    ConfChangeInProgress,
    InvalidConfChange,
    NotLeader,
    RaftInvariantError,
    TransferInProgress,
    check,
    present,
)
from distcluster_worker.raft.log import RaftLog, restorable_entries
from distcluster_worker.raft.messages import (
    RESPONSE_TYPES,
    AppendRequest,
    AppendResponse,
    Entry,
    HardState,
    Message,
    ReadState,
    Ready,
    Snapshot,
    SnapshotRequest,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from distcluster_worker.raft.replication import Replicator

__all__ = [
    "ConfChange",
    "ConfChangeInProgress",
    "InvalidConfChange",
    "Membership",
    "NotLeader",
    "RaftConfig",
    "RaftInvariantError",
    "RaftNode",
    "Restored",
    "State",
    "TransferInProgress",
]

State = Literal["follower", "pre_candidate", "candidate", "leader"]


@dataclass(frozen=True)
class RaftConfig:
    """Static settings. `voters` is the bootstrap configuration, used until the log or
    a snapshot holds one; with `join` the node starts with no configuration at all (it
    is being added to a running cluster) and learns it from the leader's log."""

    node_id: str
    voters: tuple[str, ...]  # the bootstrap voters, including node_id unless `join`
    election_timeout_ticks: int = 10  # randomized per election in [t, 2t)
    heartbeat_ticks: int = 1
    max_entries_per_append: int = 512
    max_inflight_appends: int = 4
    # Entry payload bytes per AppendRequest (at least one entry always goes): a follower
    # catching up then gets frames it steps and persists in a millisecond or two, not
    # one of hundreds of kilobytes that holds up everything behind it on its link.
    max_append_bytes: int = 24 * 1024
    pre_vote: bool = True
    check_quorum: bool = True
    join: bool = False

    def __post_init__(self) -> None:
        if len(set(self.voters)) != len(self.voters) or not all(self.voters):
            raise ValueError("voters must be distinct node ids")
        if not self.join and self.node_id not in self.voters:
            raise ValueError("voters must include node_id (or set join=True)")
        if not 1 <= self.heartbeat_ticks < self.election_timeout_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_timeout_ticks")
        if min(self.max_entries_per_append, self.max_inflight_appends, self.max_append_bytes) < 1:
            raise ValueError(
                "max_entries_per_append, max_inflight_appends and max_append_bytes must be >= 1"
            )

    def bootstrap_membership(self) -> Membership:
        return NO_MEMBERSHIP if self.join else Membership.of(self.voters)


@dataclass(frozen=True)
class Restored:
    """What the shell read back from stable storage at start."""

    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]  # the stored log after the snapshot


@dataclass(frozen=True)
class _PendingRead:
    ctx: int
    index: int
    seq: int


class RaftNode:
    """A Raft node; see the module docstring for how the shell drives it."""

    def __init__(
        self, config: RaftConfig, rng: random.Random, restored: Restored | None = None
    ) -> None:
        self._config = config
        self._rng = rng
        self._id = config.node_id
        hard = restored.hard_state if restored else HardState()
        snapshot = restored.snapshot if restored else None
        entries = restorable_entries(snapshot, restored.entries) if restored else []
        # The configuration lives in the log (see `RaftLog.configs`), nowhere else.
        self._log = RaftLog(snapshot, entries, hard.commit, config.bootstrap_membership())
        self._term = hard.term
        self._voted_for = hard.voted_for
        check(self._log.last_term <= self._term, "restored log is ahead of the term")
        self._prev_hard = hard
        self._state: State = "follower"
        self._leader_id: str | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = 0
        self._votes: dict[str, bool] = {}
        self._repl: Replicator | None = None
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._reads_waiting: list[int] = []
        self._reads: list[_PendingRead] = []
        self._transfer: str | None = None
        self._transfer_elapsed = 0
        self._reset()

    # -- read-only view -----------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._id

    @property
    def state(self) -> State:
        return self._state

    @property
    def term(self) -> int:
        return self._term

    @property
    def voted_for(self) -> str | None:
        return self._voted_for

    @property
    def leader_id(self) -> str | None:
        return self._leader_id

    @property
    def commit_index(self) -> int:
        return self._log.commit

    @property
    def applied_index(self) -> int:
        return self._log.applied

    @property
    def first_index(self) -> int:
        return self._log.first_index

    @property
    def last_index(self) -> int:
        return self._log.last_index

    @property
    def snapshot(self) -> Snapshot | None:
        return self._log.snapshot

    @property
    def membership(self) -> Membership:
        """The configuration in force: the latest one in the log, committed or not."""
        return self._log.membership

    @property
    def committed_membership(self) -> Membership:
        """The latest committed configuration: once it leaves this node out, the shell
        may stop the node (it was removed); until then it may still be needed."""
        return self._log.configs.as_of(self._log.commit)

    @property
    def voters(self) -> tuple[str, ...]:
        return self._log.membership.voters

    @property
    def learners(self) -> tuple[str, ...]:
        return self._log.membership.learners

    @property
    def config_index(self) -> int:
        """Index of the latest config entry (the snapshot's index, or 0, if none)."""
        return self._log.configs.latest_index

    @property
    def promotable(self) -> bool:
        """Whether this node may campaign: it is a voter in its own configuration."""
        return self._log.membership.is_voter(self._id)

    @property
    def transfer_target(self) -> str | None:
        return self._transfer

    def term_at(self, index: int) -> int | None:
        return self._log.term_at(index)

    def entries_from(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi, clamped to what the log still holds."""
        return self._log.slice(lo, hi)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "node_id": self._id,
            "state": self._state,
            "term": self._term,
            "leader_id": self._leader_id,
            "commit_index": self._log.commit,
            "last_applied": self._log.applied,
            "last_index": self._log.last_index,
            "snapshot_index": self._log.snapshot_index,
            "voters": list(self.voters),
            "learners": list(self.learners),
            "config_index": self.config_index,
        }
        if self._repl is not None:
            learners = self.learners
            status["transfer_target"] = self._transfer
            status["progress"] = {
                peer: {
                    "match": pr.match,
                    "next": pr.next,
                    "state": pr.state,
                    "learner": peer in learners,
                }
                for peer, pr in self._repl.progress.items()
            }
        return status

    # -- driving ------------------------------------------------------------------

    def tick(self) -> None:
        if self._state == "leader":
            self._tick_leader()
        else:
            self._tick_election()

    def step(self, msg: Message) -> None:
        """Handle one message; stale, duplicated or malformed ones are ignored."""
        if msg.dst != self._id or msg.src == self._id:
            return
        if isinstance(msg, RESPONSE_TYPES) and not self._log.membership.is_member(msg.src):
            return  # an answer from a node that is no member (any more) counts for nothing
        if msg.term > self._term:
            if not self._step_higher_term(msg):
                return
        elif msg.term < self._term:
            self._step_lower_term(msg)
            return
        self._dispatch(msg)
        self._check_invariants()

    def propose(self, data: str) -> int:
        return self.propose_many([data])[0]

    def propose_many(self, datas: Sequence[str]) -> list[int]:
        """Append commands (leader only) and send them, batched, to every follower."""
        self._check_proposals_open()
        start = self._log.last_index + 1
        entries = [Entry(self._term, start + i, "command", d) for i, d in enumerate(datas)]
        self._log.append(entries)
        self._leader().bcast_append()
        return [entry.index for entry in entries]

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a config entry for `change` (leader only); returns its index.

        Raises `NotLeader` (or `TransferInProgress`), `ConfChangeInProgress` while an
        earlier config entry or this leader's first entry of its term is uncommitted,
        and `InvalidConfChange` if the change does not apply to the latest configuration.
        The new configuration is in force from this moment, on this node and on each
        follower as soon as it stores the entry.
        """
        self._check_proposals_open()
        if self._log.term_at(self._log.commit) != self._term:
            raise ConfChangeInProgress("term_uncommitted")
        if self._log.configs.latest_index > self._log.commit:
            raise ConfChangeInProgress("config_uncommitted")
        membership = self._log.membership.apply(change)
        index = self._log.last_index + 1
        self._log.append([Entry(self._term, index, "config", encode_membership(membership))])
        repl = self._leader()
        repl.set_membership(membership)
        repl.bcast_append()
        self._after_progress()  # fewer voters may already hold a majority of the log
        self._check_invariants()
        return index

    def learner_caught_up(self, node_id: str) -> bool:
        """Whether learner `node_id` holds every committed entry (leader only).

        The shell promotes a learner only once this holds, so the new voter does not
        leave the cluster short of a working majority while it catches up.
        """
        if self._state != "leader":
            raise NotLeader(self._leader_id)
        if not self._log.membership.is_learner(node_id):
            raise InvalidConfChange("not_learner", node_id)
        pr = self._leader().progress[node_id]
        return pr.state == "replicate" and pr.match >= self._log.commit

    def transfer_leadership(self, target: str) -> None:
        """Hand leadership to voter `target` (thesis 3.10); leader only.

        Proposals are refused (`TransferInProgress`) until the target wins its election
        (this node then steps down on its vote request) or an election timeout passes.
        """
        if self._state != "leader":
            raise NotLeader(self._leader_id)
        if target == self._id or target == self._transfer:
            return
        if not self._log.membership.is_voter(target):
            raise InvalidConfChange("not_voter", target)
        self._transfer, self._transfer_elapsed = target, 0
        repl = self._leader()
        pr = repl.progress[target]
        if pr.match == self._log.last_index:
            self._send(TimeoutNow(self._id, target, self._term))
            return
        if pr.state == "replicate":
            # Resend from what is known to match instead of waiting for a stalled pipeline
            # to time out: the transfer itself gives up after one election timeout.
            pr.become_probe()
        repl.send_append(target)

    def read_index(self, ctx: int) -> None:
        """Start a linearizable read; a `ReadState(ctx, index)` follows in `ready()`."""
        if self._state != "leader":
            raise NotLeader(self._leader_id)
        if self._log.term_at(self._log.commit) != self._term:
            self._reads_waiting.append(ctx)
            return
        self._start_reads([ctx])

    def compact(self, index: int, data: str) -> None:
        """The shell snapshotted the state machine at applied `index`; drop the log up to it."""
        if index <= self._log.snapshot_index:
            return
        if index > self._log.applied:
            raise ValueError(f"cannot compact to {index}: applied is {self._log.applied}")
        term = present(self._log.term_at(index), f"no term at applied index {index}")
        members = self._log.configs.as_of(index)
        self._log.compact(Snapshot(index, term, data, members.voters, members.learners))

    # -- Ready ----------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._hard_state() != self._prev_hard
            or self._log.unstable()
            or self._log.pending_snapshot is not None
            or self._log.to_apply()
            or self._msgs
            or self._read_states
        )

    def ready(self) -> Ready:
        """Everything pending since the last `advance`; safe to call repeatedly."""
        hard = self._hard_state()
        if self._repl is not None:
            self._repl.read_seq_out = self._repl.read_seq
        return Ready(
            hard_state=hard if hard != self._prev_hard else None,
            entries=self._log.unstable(),
            snapshot=self._log.pending_snapshot,
            committed_entries=self._log.to_apply(),
            messages=list(self._msgs),
            read_states=list(self._read_states),
        )

    def advance(self, ready: Ready) -> None:
        """The shell persisted, sent and applied `ready`."""
        if ready.hard_state is not None:
            self._prev_hard = ready.hard_state
        if ready.snapshot is not None:
            self._log.snapshot_persisted(ready.snapshot)
        if ready.entries:
            last = ready.entries[-1]
            self._log.stable_to(last.index, last.term)
        if ready.committed_entries:
            self._log.applied_to(ready.committed_entries[-1].index)
        sent = {id(m) for m in ready.messages}
        self._msgs = [m for m in self._msgs if id(m) not in sent]
        handed = {id(r) for r in ready.read_states}
        self._read_states = [r for r in self._read_states if id(r) not in handed]
        if self._state == "leader":
            self._after_progress()
        self._check_invariants()

    def _hard_state(self) -> HardState:
        return HardState(self._term, self._voted_for, self._log.commit)

    def _check_proposals_open(self) -> None:
        if self._state != "leader":
            raise NotLeader(self._leader_id)
        if self._transfer is not None:
            raise TransferInProgress(self._transfer)

    # -- roles ----------------------------------------------------------------------

    def _reset(self) -> None:
        """Forget per-role state and draw a fresh randomized election timeout."""
        timeout = self._config.election_timeout_ticks
        self._randomized_timeout = self._rng.randrange(timeout, 2 * timeout)
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._votes = {}
        self._repl = None
        self._reads_waiting = []
        self._reads = []
        self._transfer = None

    def _set_term(self, term: int) -> None:
        check(term >= self._term, f"term would go down from {self._term} to {term}")
        if term > self._term:
            self._term = term
            self._voted_for = None

    def _become_follower(self, term: int, leader_id: str | None) -> None:
        self._set_term(term)
        self._state = "follower"
        self._leader_id = leader_id
        self._reset()

    def _become_pre_candidate(self) -> None:
        self._state = "pre_candidate"
        self._leader_id = None
        self._reset()
        self._votes = {self._id: True}
        if self._tally() == "won":
            self._become_candidate()
            return
        self._request_votes(pre_vote=True)

    def _become_candidate(self, transfer: bool = False) -> None:
        self._set_term(self._term + 1)
        self._voted_for = self._id
        self._state = "candidate"
        self._leader_id = None
        self._reset()
        self._votes = {self._id: True}
        if self._tally() == "won":
            self._become_leader()
            return
        self._request_votes(pre_vote=False, transfer=transfer)

    def _become_leader(self) -> None:
        self._state = "leader"
        self._leader_id = self._id
        self._reset()
        cfg = self._config
        limits = (cfg.max_entries_per_append, cfg.max_inflight_appends, cfg.max_append_bytes)
        membership = self._log.membership
        repl = Replicator(self._id, self._term, membership, self._log, limits, self._send)
        self._repl = repl
        # The noop commits the new term, and with it every entry before it.
        self._log.append([Entry(self._term, self._log.last_index + 1, "noop")])
        repl.bcast_append()

    def _request_votes(self, pre_vote: bool, transfer: bool = False) -> None:
        term = self._term + 1 if pre_vote else self._term
        last_index, last_term = self._log.last_index, self._log.last_term
        for peer in self._log.membership.voters:
            if peer != self._id:
                self._send(
                    VoteRequest(self._id, peer, term, last_index, last_term, pre_vote, transfer)
                )

    def _tally(self) -> Literal["won", "lost", "pending"]:
        """Count the votes of the voters of our configuration (only they are recorded)."""
        quorum = self._log.membership.quorum
        granted = sum(1 for ok in self._votes.values() if ok)
        if granted >= quorum:
            return "won"
        if len(self._votes) - granted >= quorum:
            return "lost"
        return "pending"

    # -- ticks ----------------------------------------------------------------------

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._election_elapsed >= self._randomized_timeout and self.promotable:
            self._campaign()

    def _campaign(self) -> None:
        if self._config.pre_vote:
            self._become_pre_candidate()
        else:
            self._become_candidate()

    def _tick_leader(self) -> None:
        repl = self._leader()
        timeout = self._config.election_timeout_ticks
        self._election_elapsed += 1
        self._heartbeat_elapsed += 1
        if self._election_elapsed >= timeout:
            self._election_elapsed = 0
            if self._config.check_quorum and not repl.quorum_active():
                self._become_follower(self._term, None)
                return
        if self._transfer is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= timeout:
                self._transfer = None  # the target did not take over: lead on
        repl.tick(timeout)
        if self._heartbeat_elapsed >= self._config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            repl.bcast_heartbeat()

    def _in_lease(self, pre_vote: bool) -> bool:
        """Whether we heard from a live leader within the minimum election timeout."""
        applies = pre_vote or self._config.check_quorum
        recent = self._election_elapsed < self._config.election_timeout_ticks
        return applies and self._leader_id is not None and recent

    # -- step: terms and dispatch ---------------------------------------------------

    def _step_higher_term(self, msg: Message) -> bool:
        """Apply the higher-term rule; False if the message is to be ignored."""
        if isinstance(msg, VoteRequest):
            if not msg.transfer and self._in_lease(msg.pre_vote):
                return False
            if not msg.pre_vote:
                self._become_follower(msg.term, None)
            return True
        if isinstance(msg, VoteResponse) and msg.pre_vote and msg.granted:
            return True
        is_leader_msg = isinstance(msg, AppendRequest | SnapshotRequest | TimeoutNow)
        self._become_follower(msg.term, msg.src if is_leader_msg else None)
        return True

    def _step_lower_term(self, msg: Message) -> None:
        """Tell a stale sender our term so it steps down; ignore stale responses."""
        if isinstance(msg, AppendRequest):
            self._send(
                AppendResponse(self._id, msg.src, self._term, False, match_index=msg.prev_log_index)
            )
        elif isinstance(msg, SnapshotRequest):
            self._send(SnapshotResponse(self._id, msg.src, self._term, 0))
        elif isinstance(msg, VoteRequest):
            self._send(VoteResponse(self._id, msg.src, self._term, False, msg.pre_vote))

    def _dispatch(self, msg: Message) -> None:
        if isinstance(msg, VoteRequest):
            self._handle_vote_request(msg)
        elif isinstance(msg, VoteResponse):
            self._handle_vote_response(msg)
        elif isinstance(msg, AppendRequest):
            self._handle_append(msg)
        elif isinstance(msg, SnapshotRequest):
            self._handle_snapshot(msg)
        elif isinstance(msg, TimeoutNow):
            self._handle_timeout_now()
        elif self._state == "leader" and isinstance(msg, AppendResponse):
            self._handle_append_response(msg)
        elif self._state == "leader" and isinstance(msg, SnapshotResponse):
            self._handle_snapshot_response(msg)

    # -- elections ------------------------------------------------------------------

    def _handle_vote_request(self, msg: VoteRequest) -> None:
        up_to_date = self._log.is_up_to_date(msg.last_log_term, msg.last_log_index)
        if msg.pre_vote:
            # Granted only for a term above ours (the lease was checked before): log decides.
            grant = msg.term > self._term and up_to_date
            term = msg.term if grant else self._term
            self._send(VoteResponse(self._id, msg.src, term, grant, pre_vote=True))
            return
        can_vote = self._voted_for == msg.src or (
            self._voted_for is None and self._leader_id is None
        )
        grant = can_vote and up_to_date
        if grant:
            self._voted_for = msg.src
            self._election_elapsed = 0
        self._send(VoteResponse(self._id, msg.src, self._term, grant))

    def _handle_vote_response(self, msg: VoteResponse) -> None:
        if self._state == "pre_candidate" and msg.pre_vote:
            if msg.granted and msg.term != self._term + 1:
                return
        elif not (self._state == "candidate" and not msg.pre_vote):
            return
        if not self._log.membership.is_voter(msg.src):
            return  # a learner's vote does not count (its answer may still carry a term)
        self._votes.setdefault(msg.src, msg.granted)
        outcome = self._tally()
        if outcome == "lost":
            self._become_follower(self._term, None)
        elif outcome == "won" and self._state == "pre_candidate":
            self._become_candidate()
        elif outcome == "won":
            self._become_leader()

    def _handle_timeout_now(self) -> None:
        """Our leader hands over: campaign at once, skipping PreVote (thesis 3.10)."""
        if self._state == "follower" and self.promotable:
            self._become_candidate(transfer=True)

    # -- replication: follower side ---------------------------------------------------

    def _follow(self, leader_id: str) -> None:
        """A leader of our term spoke: follow it and restart the election timer."""
        if self._state != "follower":
            self._become_follower(self._term, leader_id)
        self._leader_id = leader_id
        self._election_elapsed = 0

    def _handle_append(self, msg: AppendRequest) -> None:
        if self._state == "leader" or not _well_formed(msg):
            return
        self._follow(msg.src)
        prev, prev_term, entries = msg.prev_log_index, msg.prev_log_term, msg.entries
        last_new = prev + len(entries)
        snap_index = self._log.snapshot_index
        if prev < snap_index:
            # Everything up to the snapshot is committed, hence matches the leader.
            entries = tuple(e for e in entries if e.index > snap_index)
            prev, prev_term = snap_index, self._log.term_at(snap_index) or 0
        local_term = self._log.term_at(prev)
        if local_term != prev_term:
            self._reject_append(msg, local_term)
            return
        self._log.merge(entries)
        self._log.commit_to(min(msg.leader_commit, last_new))
        self._send(
            AppendResponse(
                self._id, msg.src, self._term, True, match_index=last_new, read_seq=msg.read_seq
            )
        )

    def _reject_append(self, msg: AppendRequest, local_term: int | None) -> None:
        if local_term is None:
            conflict_index, conflict_term = self._log.last_index + 1, 0
        else:
            conflict_index = self._log.first_index_of_term_at(msg.prev_log_index)
            conflict_term = local_term
        reply = AppendResponse(
            self._id,
            msg.src,
            self._term,
            False,
            match_index=msg.prev_log_index,
            conflict_index=conflict_index,
            conflict_term=conflict_term,
            read_seq=msg.read_seq,
        )
        self._send(reply)

    def _handle_snapshot(self, msg: SnapshotRequest) -> None:
        if self._state == "leader" or not _snapshot_well_formed(msg):
            return
        self._follow(msg.src)
        if msg.snapshot.last_index > self._log.commit:
            self._log.install(msg.snapshot)
        reply = SnapshotResponse(
            self._id, msg.src, self._term, self._log.commit, read_seq=msg.read_seq
        )
        self._send(reply)

    # -- replication: leader side -----------------------------------------------------

    def _handle_append_response(self, msg: AppendResponse) -> None:
        repl = self._leader()
        repl.on_append_response(msg)
        target = repl.progress.get(msg.src)
        if self._transfer == msg.src and target and target.match == self._log.last_index:
            self._send(TimeoutNow(self._id, msg.src, self._term))
        self._after_progress()

    def _handle_snapshot_response(self, msg: SnapshotResponse) -> None:
        self._leader().on_snapshot_response(msg)
        self._after_progress()

    def _after_progress(self) -> None:
        """Followers' logs moved: commit, confirm reads, and leave if we were removed."""
        self._maybe_commit()
        self._check_reads()
        removed = not self.promotable and self._log.commit >= self._log.configs.latest_index
        if removed:
            self._become_follower(self._term, None)

    def _maybe_commit(self) -> None:
        """Commit the highest index a majority stored, if it is of the current term."""
        index = self._leader().quorum_match(self._log.stable_index)
        if index > self._log.commit and self._log.term_at(index) == self._term:
            self._log.commit_to(index)
            if self._reads_waiting:
                waiting, self._reads_waiting = self._reads_waiting, []
                self._start_reads(waiting)

    def _leader(self) -> Replicator:
        return present(self._repl, "leader-only step on a node that is not leading")

    # -- ReadIndex --------------------------------------------------------------------

    def _start_reads(self, ctxs: list[int]) -> None:
        """Record reads at the current commit, confirmed by the next heartbeat round."""
        if self._log.membership.voters == (self._id,):
            self._read_states.extend(ReadState(ctx, self._log.commit) for ctx in ctxs)
            return
        repl = self._leader()
        # A round not handed out in a Ready yet still leaves after these reads arrived.
        if repl.read_seq <= repl.read_seq_out:
            repl.read_seq += 1
            repl.bcast_heartbeat()
        self._reads.extend(_PendingRead(ctx, self._log.commit, repl.read_seq) for ctx in ctxs)

    def _check_reads(self) -> None:
        if not self._reads:
            return
        acked = self._leader().quorum_read_seq()
        while self._reads and self._reads[0].seq <= acked:
            read = self._reads.pop(0)
            self._read_states.append(ReadState(read.ctx, read.index))

    # -- plumbing ---------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        self._msgs.append(msg)

    def _check_invariants(self) -> None:
        log = self._log
        check(log.applied <= log.commit <= log.last_index, "applied <= commit <= last broken")
        check(log.stable_index <= log.last_index, "stable index past the end of the log")
        check(log.last_term <= self._term, "log holds a term above the node's term")
        if self._state == "leader":
            check(self._leader_id == self._id, "a leader must name itself leader")
            check(
                self.promotable or self._log.configs.latest_index > log.commit,
                "a leader stays on after its own removal committed",
            )
        elif self._state != "follower":
            check(self.promotable, "a node campaigns without being a voter")


def _well_formed(msg: AppendRequest) -> bool:
    """Entries follow prev contiguously, with terms that never go down or pass msg.term,
    and every config entry holds a membership."""
    if msg.prev_log_term > msg.term or (msg.prev_log_index == 0 and msg.prev_log_term != 0):
        return False
    index, term = msg.prev_log_index, msg.prev_log_term
    for entry in msg.entries:
        if entry.index != index + 1 or not term <= entry.term <= msg.term:
            return False
        if entry.kind == "config" and not _decodes(entry.data):
            return False
        index, term = entry.index, entry.term
    return True


def _decodes(data: str) -> bool:
    try:
        decode_membership(data)
    except ValueError:
        return False
    return True


def _snapshot_well_formed(msg: SnapshotRequest) -> bool:
    snap = msg.snapshot
    try:
        snapshot_membership(snap.voters, snap.learners)
    except ValueError:
        return False
    return snap.last_term <= msg.term
