"""The Raft log: an optional snapshot followed by contiguous entries.

Layout. `snapshot_index`/`snapshot_term` stand for every index up to and including
the snapshot (0/0 without one); `_entries[k]` has index `snapshot_index + 1 + k`.
So `first_index` is `snapshot_index + 1` and `term_at(snapshot_index)` is still
known, which is all the consistency check of AppendEntries needs.

Watermarks, all indexes, in this order:
    snapshot_index <= applied <= commit <= last_index   and   stable_index <= last_index
`stable_index` is the last entry the shell confirmed it persisted (`advance`). What
lies above it is handed out in `Ready.entries`; a truncation lowers it, so the first
handed-out entry is also where the shell must cut its stored log. `commit` may run
ahead of `stable_index` on a follower: the shell persists a Ready before applying it.

Invariants checked here (they raise `RaftInvariantError`): indexes stay contiguous,
terms never go down along the log, commit never goes down and never passes the log's
end, and a committed entry is never truncated.

Configurations. Every path that changes the entries (append, merge's truncation,
install, compact) also tells `configs`, a `ConfigHistory`, so the latest configuration
in the log is known at once and reverts when a truncation cuts its entry. Before any
config entry, the configuration is the snapshot's, else the bootstrap one.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from distcluster_worker.raft.confchange import (
    NO_MEMBERSHIP,
    ConfigHistory,
    Membership,
    snapshot_membership,
)
from distcluster_worker.raft.errors import check, present
from distcluster_worker.raft.messages import Entry, Snapshot


def _term_of(entry: Entry) -> int:
    return entry.term


class RaftLog:
    """Entries, snapshot and the commit/applied/stable watermarks of one node."""

    def __init__(
        self,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        commit: int = 0,
        bootstrap: Membership = NO_MEMBERSHIP,
    ) -> None:
        self._snapshot = snapshot
        self._snap_index = snapshot.last_index if snapshot else 0
        self._snap_term = snapshot.last_term if snapshot else 0
        self._bootstrap = bootstrap
        self.configs = ConfigHistory(self._membership_of(snapshot), self._snap_index)
        self._entries: list[Entry] = []
        self._append_checked(entries)
        self.stable_index = self.last_index
        self.commit = max(commit, self._snap_index)
        self.applied = self._snap_index
        # A snapshot received from the leader that the shell has not persisted yet.
        self.pending_snapshot: Snapshot | None = None
        check(self.commit <= self.last_index, "restored commit is past the end of the log")

    # -- reading ------------------------------------------------------------------

    @property
    def membership(self) -> Membership:
        """The latest configuration in the log, committed or not."""
        return self.configs.latest

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def snapshot_index(self) -> int:
        return self._snap_index

    @property
    def first_index(self) -> int:
        return self._snap_index + 1

    @property
    def last_index(self) -> int:
        return self._snap_index + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self._snap_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted away or not there yet."""
        if index == self._snap_index:
            return self._snap_term
        if index < self._snap_index or index > self.last_index:
            return 0 if index == 0 else None
        return self._entries[index - self._snap_index - 1].term

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi, clamped to what the log still holds."""
        lo = max(lo, self.first_index)
        hi = min(hi, self.last_index + 1)
        if lo >= hi:
            return []
        base = self._snap_index + 1
        return self._entries[lo - base : hi - base]

    def unstable(self) -> list[Entry]:
        return self.slice(self.stable_index + 1, self.last_index + 1)

    def to_apply(self) -> list[Entry]:
        """Committed entries not applied yet (after a pending snapshot, if any)."""
        lo = self.applied + 1
        if self.pending_snapshot is not None:
            lo = max(lo, self.pending_snapshot.last_index + 1)
        return self.slice(lo, self.commit + 1)

    def is_up_to_date(self, last_term: int, last_index: int) -> bool:
        """Whether a log ending at (last_term, last_index) is at least as up to date."""
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def last_index_of_term(self, term: int) -> int | None:
        """The last index holding `term` in this log (snapshot included), if any."""
        pos = bisect_right(self._entries, term, key=_term_of)
        if pos > 0 and self._entries[pos - 1].term == term:
            return self._snap_index + pos
        if pos == 0 and self._snap_term == term and self._snap_index > 0:
            return self._snap_index
        return None

    def first_index_of_term_at(self, index: int) -> int:
        """The first index (not below `first_index`) whose term equals `term_at(index)`."""
        check(index >= self.first_index, "no entry to look back from")
        term = present(self.term_at(index), f"no entry at {index} to look back from")
        pos = bisect_left(self._entries, term, key=_term_of)
        return self._snap_index + 1 + pos

    def find_conflict(self, entries: Sequence[Entry]) -> int:
        """The index of the first entry not already in the log (0 if all are)."""
        for entry in entries:
            if self.term_at(entry.index) != entry.term:
                return entry.index
        return 0

    # -- writing ------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries that start right after the last one (the leader's path)."""
        self._append_checked(entries)

    def merge(self, entries: Sequence[Entry]) -> None:
        """Merge entries the leader sent after a matching prev (the follower's path).

        Entries already present are left alone, so a duplicated or reordered, older
        AppendRequest never truncates anything; only a real conflict (same index,
        different term) cuts the log, and never at or below commit.
        """
        conflict = self.find_conflict(entries)
        if conflict == 0:
            return
        if conflict <= self.last_index:
            check(conflict > self.commit, f"conflict at committed index {conflict}")
            self._truncate_from(conflict)
        self._append_checked(entries[conflict - entries[0].index :])

    def commit_to(self, index: int) -> None:
        check(index <= self.last_index, f"commit {index} past last index {self.last_index}")
        self.commit = max(self.commit, index)

    def applied_to(self, index: int) -> None:
        check(index <= self.commit, f"applied {index} past commit {self.commit}")
        self.applied = max(self.applied, index)

    def stable_to(self, index: int, term: int) -> None:
        """The shell persisted the log up to (index, term); ignore it if since replaced.

        By the Log Matching property a matching (index, term) means every entry up to
        `index` is the one the shell stored.
        """
        if index > self.stable_index and self.term_at(index) == term:
            self.stable_index = index

    def install(self, snapshot: Snapshot) -> None:
        """Adopt a snapshot from the leader (its last index is past our commit).

        If we hold the snapshot's last entry, everything up to it matches and the
        suffix after it is kept; otherwise the whole log is dropped. The shell mirrors
        this when it persists `Ready.snapshot`.
        """
        check(snapshot.last_index > self.commit, "snapshot does not advance commit")
        if self.term_at(snapshot.last_index) == snapshot.last_term:
            self._entries = self.slice(snapshot.last_index + 1, self.last_index + 1)
            self.stable_index = max(self.stable_index, snapshot.last_index)
            keep = True
        else:
            self._entries = []
            self.stable_index = snapshot.last_index
            keep = False
        self._snapshot = snapshot
        self._snap_index, self._snap_term = snapshot.last_index, snapshot.last_term
        self.configs.rebased(self._membership_of(snapshot), snapshot.last_index, keep)
        self.pending_snapshot = snapshot
        self.commit = snapshot.last_index

    def snapshot_persisted(self, snapshot: Snapshot) -> None:
        if self.pending_snapshot is snapshot:
            self.pending_snapshot = None
            self.applied = max(self.applied, snapshot.last_index)

    def compact(self, snapshot: Snapshot) -> None:
        """Replace entries up to `snapshot.last_index` (applied and stable) by it."""
        index = snapshot.last_index
        check(index <= self.applied, f"compact {index} past applied {self.applied}")
        check(index <= self.stable_index, f"compact {index} past stable {self.stable_index}")
        check(self.term_at(index) == snapshot.last_term, "snapshot term does not match log")
        membership = self.configs.as_of(index)
        recorded = snapshot_membership(snapshot.voters, snapshot.learners)
        check(recorded in (None, membership), "snapshot membership differs from the log's")
        self._entries = self.slice(index + 1, self.last_index + 1)
        self._snapshot = snapshot
        self._snap_index, self._snap_term = index, snapshot.last_term
        self.configs.rebased(membership, index, keep_after=True)

    def _membership_of(self, snapshot: Snapshot | None) -> Membership:
        """A snapshot's membership; the bootstrap one if there is no snapshot or it has none.

        Restart (`__init__`) and install use this one rule, so a node that restarts from a
        snapshot it installed sees the configuration it saw before the restart.
        """
        if snapshot is None:
            return self._bootstrap
        return snapshot_membership(snapshot.voters, snapshot.learners) or self._bootstrap

    def _truncate_from(self, index: int) -> None:
        del self._entries[index - self._snap_index - 1 :]
        self.stable_index = min(self.stable_index, index - 1)
        self.configs.truncated_from(index)

    def _append_checked(self, entries: Sequence[Entry]) -> None:
        last_index, last_term = self.last_index, self.last_term
        for entry in entries:
            check(entry.index == last_index + 1, f"entry {entry.index} after {last_index}")
            check(entry.term >= last_term, f"entry term {entry.term} below {last_term}")
            last_index, last_term = entry.index, entry.term
        self._entries.extend(entries)
        for entry in entries:
            if entry.kind == "config":
                self.configs.appended(entry.index, entry.term, entry.data)


def restorable_entries(snapshot: Snapshot | None, entries: Sequence[Entry]) -> list[Entry]:
    """The stored entries a restarted node can trust: those that extend the snapshot.

    Entries at or below the snapshot are covered by it. Anything after the first gap
    or term regression is a suffix the shell could not have meant to keep (left over
    from before a snapshot install that dropped the log) and is ignored.
    """
    last_index = snapshot.last_index if snapshot else 0
    last_term = snapshot.last_term if snapshot else 0
    kept: list[Entry] = []
    for entry in entries:
        if entry.index <= last_index and not kept:
            continue
        if entry.index != last_index + 1 or entry.term < last_term:
            break
        kept.append(entry)
        last_index, last_term = entry.index, entry.term
    return kept
