"""The log alone: layout around a snapshot, merge rules, watermarks and invariants."""

from __future__ import annotations

import pytest

from distcluster_worker.raft.errors import RaftInvariantError
from distcluster_worker.raft.log import RaftLog, restorable_entries
from distcluster_worker.raft.messages import Entry, Snapshot


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    """Entries from (index, term) pairs."""
    return [Entry(t, i, "command", f"e{i}") for i, t in pairs]


def test_term_at_around_a_snapshot() -> None:
    log = RaftLog(Snapshot(3, 2, "s"), ents((4, 2), (5, 3)))
    assert [log.term_at(i) for i in (0, 2, 3, 4, 5, 6)] == [0, None, 2, 2, 3, None]
    assert (log.first_index, log.last_index, log.last_term) == (4, 5, 3)


def test_slice_is_clamped_to_what_the_log_holds() -> None:
    log = RaftLog(Snapshot(3, 2, "s"), ents((4, 2), (5, 3)))
    assert [e.index for e in log.slice(1, 100)] == [4, 5]
    assert log.slice(6, 9) == []


def test_merge_leaves_matching_entries_alone() -> None:
    log = RaftLog(None, ents((1, 1), (2, 1), (3, 1)))
    log.merge(ents((2, 1)))
    assert log.last_index == 3 and log.unstable() == []


def test_merge_truncates_only_on_a_real_conflict() -> None:
    log = RaftLog(None, ents((1, 1), (2, 1), (3, 1)))
    log.merge(ents((2, 1), (3, 2), (4, 2)))
    assert [e.term for e in log.slice(1, 9)] == [1, 1, 2, 2]
    assert [e.index for e in log.unstable()] == [3, 4]


def test_truncating_a_committed_entry_is_an_invariant_error() -> None:
    log = RaftLog(None, ents((1, 1), (2, 1)), commit=2)
    with pytest.raises(RaftInvariantError):
        log.merge(ents((2, 2)))


def test_append_must_be_contiguous_with_rising_terms() -> None:
    log = RaftLog(None, ents((1, 2)))
    with pytest.raises(RaftInvariantError):
        log.append(ents((3, 2)))
    with pytest.raises(RaftInvariantError):
        log.append(ents((2, 1)))


def test_commit_never_goes_down_nor_past_the_end() -> None:
    log = RaftLog(None, ents((1, 1), (2, 1)))
    log.commit_to(2)
    log.commit_to(1)
    assert log.commit == 2
    with pytest.raises(RaftInvariantError):
        log.commit_to(3)


def test_stable_to_ignores_a_replaced_entry() -> None:
    log = RaftLog()
    log.append(ents((1, 1), (2, 1)))
    log.merge(ents((2, 2)))
    log.stable_to(2, 1)  # the shell persisted the old entry 2, since replaced
    assert log.stable_index == 0
    log.stable_to(2, 2)
    assert log.stable_index == 2


def test_conflict_lookups_by_term() -> None:
    log = RaftLog(Snapshot(2, 1, "s"), ents((3, 1), (4, 3), (5, 3), (6, 4)))
    assert [log.last_index_of_term(t) for t in (1, 2, 3, 4, 5)] == [3, None, 5, 6, None]
    assert log.first_index_of_term_at(5) == 4
    assert log.first_index_of_term_at(3) == 3  # term 1 goes on into the snapshot


def test_install_keeps_the_suffix_after_a_matching_entry() -> None:
    log = RaftLog(None, ents((1, 1), (2, 1), (3, 2)))
    log.install(Snapshot(2, 1, "s"))
    assert (log.first_index, log.last_index, log.commit) == (3, 3, 2)
    assert log.to_apply() == []


def test_install_drops_a_log_that_does_not_match() -> None:
    log = RaftLog(None, ents((1, 1), (2, 1), (3, 1)))
    log.install(Snapshot(2, 2, "s"))
    assert (log.first_index, log.last_index, log.last_term) == (3, 2, 2)


def test_compact_needs_applied_and_keeps_the_term() -> None:
    log = RaftLog(None, ents((1, 1), (2, 1), (3, 2)), commit=3)
    with pytest.raises(RaftInvariantError):
        log.compact(Snapshot(2, 1, "s"))
    log.applied_to(2)
    log.compact(Snapshot(2, 1, "s"))
    assert (log.first_index, log.term_at(2), log.term_at(1)) == (3, 1, None)


def test_restorable_entries_stop_at_a_leftover_suffix() -> None:
    snap = Snapshot(3, 2, "s")
    stored = ents((2, 1), (3, 2), (4, 2), (5, 1), (6, 1))
    assert [e.index for e in restorable_entries(snap, stored)] == [4]
    assert [e.index for e in restorable_entries(None, ents((1, 1), (3, 1)))] == [1]
