"""The leader's side of log replication, for one term of leadership.

A `Replicator` exists only while its node leads; a new term gets a new one, so no
follower state (progress, acknowledged read rounds) leaks across leaderships.

What it decides (the node decides everything about terms and roles):

- what to send to each follower, under the flow control of `progress.py`: one probe,
  a pipeline of batched AppendRequests (at most `max_entries_per_append` entries and,
  beyond the first, `max_append_bytes` of their data), or a snapshot when the entries
  are compacted;
- how to react to answers: advance `match`, or walk `next` back (fast back-off: skip
  the whole conflicting term, thesis 5.3), ignoring stale answers;
- heartbeats: every follower gets exactly one message per round, so each round
  carries the commit index and the current `read_seq` to everybody;
- which index a majority of the *voters* holds (the caller adds its own stable index),
  whether a majority of them was heard from (CheckQuorum), and which ReadIndex round a
  majority acknowledged.

Membership. Learners get entries and snapshots like voters but never count towards a
quorum. The leader itself counts only while it is a voter in the latest configuration:
a leader whose own removal is in its log keeps leading until that entry commits, but
the entry (and everything after it) must reach a majority of the others. The node
calls `set_membership` whenever its configuration changes; answers from a node that is
no longer a member find no progress and are dropped.

A rejected AppendResponse carries the rejected `prev_log_index` in `match_index`. A
rejection is fresh only if it is about where we currently probe (probe state) or above
what is known to match (replicate state); anything else is a reordered leftover.
"""

from __future__ import annotations

from collections.abc import Callable

from distcluster_worker.raft.confchange import Membership
from distcluster_worker.raft.errors import present
from distcluster_worker.raft.log import RaftLog
from distcluster_worker.raft.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    Message,
    SnapshotRequest,
    SnapshotResponse,
)
from distcluster_worker.raft.progress import Progress, quorum_value


class Replicator:
    """Progress of every follower and the messages that move it."""

    def __init__(
        self,
        node_id: str,
        term: int,
        membership: Membership,
        log: RaftLog,
        limits: tuple[int, int, int],
        send: Callable[[Message], None],
    ) -> None:
        self._id = node_id
        self._term = term
        self._log = log
        self._max_entries, self._max_inflight, self._max_bytes = limits
        self._send = send
        self.progress: dict[str, Progress] = {}
        self._membership = membership
        self.set_membership(membership)
        # ReadIndex rounds: the latest one started, and the latest handed to the shell.
        self.read_seq = 0
        self.read_seq_out = 0

    def set_membership(self, membership: Membership) -> None:
        """Track every member but this node; forget the ones that left."""
        peers = [p for p in membership.members if p != self._id]
        for gone in [p for p in self.progress if p not in peers]:
            del self.progress[gone]
        for peer in peers:
            self.progress.setdefault(peer, Progress(match=0, next=self._log.last_index + 1))
        self._membership = membership

    # -- sending ------------------------------------------------------------------

    def bcast_append(self) -> None:
        for peer in self.progress:
            self.send_append(peer)

    def bcast_heartbeat(self) -> None:
        for peer in self.progress:
            self._send_heartbeat(peer)

    def send_append(self, peer: str) -> None:
        """Send what flow control allows: one probe, a pipeline of batches, or a snapshot."""
        pr = self.progress[peer]
        while not pr.is_paused(self._max_inflight):
            if pr.next < self._log.first_index:
                self._send_snapshot(peer, pr)
                return
            entries = cap_bytes(
                self._log.slice(pr.next, pr.next + self._max_entries), self._max_bytes
            )
            if pr.state == "replicate" and not entries:
                return
            self._send_entries(peer, pr.next - 1, entries)
            pr.sent(entries[-1].index if entries else pr.next - 1)

    def _send_heartbeat(self, peer: str) -> None:
        pr = self.progress[peer]
        if pr.state == "probe":
            pr.probe_sent = False
            self.send_append(peer)
            return
        if not pr.is_paused(self._max_inflight) and pr.next <= self._log.last_index:
            self.send_append(peer)
            return
        # An empty append at a known match cannot be rejected, even if reordered.
        prev = pr.match if self._log.term_at(pr.match) is not None else 0
        self._send_entries(peer, prev, [])

    def _send_entries(self, peer: str, prev: int, entries: list[Entry]) -> None:
        prev_term = present(self._log.term_at(prev), f"leader has no term at {prev} for {peer}")
        msg = AppendRequest(
            self._id,
            peer,
            self._term,
            prev,
            prev_term,
            tuple(entries),
            self._log.commit,
            read_seq=self.read_seq,
        )
        self._send(msg)

    def _send_snapshot(self, peer: str, pr: Progress) -> None:
        snapshot = present(self._log.snapshot, f"{peer} needs compacted entries, no snapshot")
        pr.become_snapshot(snapshot.last_index)
        self._send(SnapshotRequest(self._id, peer, self._term, snapshot, self.read_seq))

    # -- answers --------------------------------------------------------------------

    def on_append_response(self, msg: AppendResponse) -> None:
        pr = self._heard_from(msg.src, msg.match_index, msg.read_seq)
        if pr is None:
            return
        if msg.success:
            pr.update(msg.match_index)
            if pr.state == "probe" and pr.match >= pr.next - 1:
                pr.become_replicate()
            elif pr.state == "snapshot" and pr.match >= pr.pending_snapshot:
                pr.become_replicate()
        elif self._fresh_rejection(pr, msg.match_index):
            hint = self._next_hint(msg.conflict_term, msg.conflict_index)
            pr.become_probe()
            pr.next = max(pr.match + 1, min(hint, msg.match_index))
        self.send_append(msg.src)

    def on_snapshot_response(self, msg: SnapshotResponse) -> None:
        pr = self._heard_from(msg.src, msg.match_index, msg.read_seq)
        if pr is None:
            return
        pr.update(msg.match_index)
        if pr.state == "snapshot" and pr.match >= pr.pending_snapshot:
            pr.become_replicate()
        elif pr.state == "snapshot":
            pr.become_probe()
        self.send_append(msg.src)

    def _heard_from(self, peer: str, match_index: int, read_seq: int) -> Progress | None:
        pr = self.progress.get(peer)
        if pr is None or match_index > self._log.last_index:
            return None
        pr.recent_active = True
        pr.read_seq = max(pr.read_seq, read_seq)
        return pr

    @staticmethod
    def _fresh_rejection(pr: Progress, rejected: int) -> bool:
        if pr.state == "replicate":
            return rejected > pr.match
        return pr.state == "probe" and rejected == pr.next - 1

    def _next_hint(self, conflict_term: int, conflict_index: int) -> int:
        """Where to probe next: past our last entry of the follower's conflicting term."""
        if conflict_term > 0:
            last_of_term = self._log.last_index_of_term(conflict_term)
            if last_of_term is not None:
                return last_of_term + 1
        return conflict_index

    # -- quorum views -----------------------------------------------------------------

    def tick(self, stall_limit: int) -> None:
        for pr in self.progress.values():
            pr.tick(stall_limit)

    def quorum_match(self, own_stable: int) -> int:
        """The highest index stored by a quorum of voters, the leader counting its stable index."""
        matches = {peer: pr.match for peer, pr in self.progress.items()}
        return quorum_value(self._voter_values(matches, own_stable), self._membership.quorum)

    def quorum_read_seq(self) -> int:
        """The highest read round acknowledged by a quorum of voters (the leader acks its own)."""
        acks = {peer: pr.read_seq for peer, pr in self.progress.items()}
        return quorum_value(self._voter_values(acks, self.read_seq), self._membership.quorum)

    def quorum_active(self) -> bool:
        """Whether a quorum of voters (self included) was heard from since the last call."""
        heard = {peer: int(pr.recent_active) for peer, pr in self.progress.items()}
        for pr in self.progress.values():
            pr.recent_active = False
        return sum(self._voter_values(heard, 1)) >= self._membership.quorum

    def _voter_values(self, values: dict[str, int], own: int) -> list[int]:
        """One value per voter: the peers' from `values`, this node's `own` if it votes."""
        return [own if voter == self._id else values[voter] for voter in self._membership.voters]


def cap_bytes(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix of `entries` (at least one) whose data fits in `max_bytes`."""
    total = 0
    for count, entry in enumerate(entries):
        total += len(entry.data)
        if total > max_bytes and count > 0:
            return entries[:count]
    return entries
