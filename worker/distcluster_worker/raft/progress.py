"""What a leader knows about each follower's log, and how fast it may send to it.

Each follower is in one of three states (etcd's `tracker.Progress`):

- probe: the leader does not know where the follower's log diverges. It sends one
  AppendRequest at `next` and waits for the answer (or the next heartbeat round)
  before sending another, walking `next` back on each rejection (fast back-off).
- replicate: the follower's log is known to match up to `match`. The leader sends
  optimistically: each AppendRequest moves `next` past its entries at once, and up to
  `max_inflight_appends` may be unanswered (pipelining). A rejection means something
  was lost or reordered, so it falls back to probe.
- snapshot: the entries the follower needs are compacted; a SnapshotRequest is out.

A follower that makes no progress for an election timeout while messages are out
(lost appends or a lost snapshot) drops back to probe, which re-sends. That is the
only retransmission rule, so it must stay cheap and deterministic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

ProgressState = Literal["probe", "replicate", "snapshot"]


@dataclass
class Progress:
    match: int
    next: int
    state: ProgressState = "probe"
    probe_sent: bool = False
    # Last index of each unanswered AppendRequest in replicate state, oldest first.
    inflight: deque[int] = field(default_factory=deque)
    pending_snapshot: int = 0
    stall_ticks: int = 0
    recent_active: bool = False
    read_seq: int = 0

    def update(self, match: int) -> bool:
        """Record that the follower's log matches up to `match`; True if that is news."""
        if match <= self.match:
            return False
        self.match = match
        self.next = max(self.next, match + 1)
        while self.inflight and self.inflight[0] <= match:
            self.inflight.popleft()
        self.stall_ticks = 0
        return True

    def become_probe(self) -> None:
        self._reset("probe")

    def become_replicate(self) -> None:
        self._reset("replicate")

    def become_snapshot(self, index: int) -> None:
        self._reset("snapshot")
        self.pending_snapshot = index

    def is_paused(self, max_inflight: int) -> bool:
        if self.state == "probe":
            return self.probe_sent
        if self.state == "replicate":
            return len(self.inflight) >= max_inflight
        return True

    def sent(self, last_index: int) -> None:
        """An AppendRequest whose last entry is `last_index` went out."""
        if self.state == "replicate":
            self.inflight.append(last_index)
            self.next = last_index + 1
        else:
            self.probe_sent = True

    def tick(self, stall_limit: int) -> None:
        """Count a tick without progress; past `stall_limit` start over from probe."""
        waiting = self.state == "snapshot" or (self.state == "replicate" and self.inflight)
        self.stall_ticks = self.stall_ticks + 1 if waiting else 0
        if self.stall_ticks >= stall_limit:
            self.become_probe()

    def _reset(self, state: ProgressState) -> None:
        self.state = state
        self.next = self.match + 1
        self.inflight.clear()
        self.probe_sent = False
        self.pending_snapshot = 0
        self.stall_ticks = 0


def quorum_value(values: list[int], quorum: int) -> int:
    """The largest value that at least `quorum` of `values` reach."""
    return sorted(values, reverse=True)[quorum - 1]
