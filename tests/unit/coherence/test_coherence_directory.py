"""Directory scenarios, one per rule of the protocol (3 nodes a, b, c; lease 10 ticks)."""

from __future__ import annotations

import pytest

from distcluster_worker.coherence import (
    Completed,
    Directory,
    MesiState,
    NotReadyError,
    Plan,
    Queued,
    TxnKind,
    UnknownTransactionError,
)

M, E, S, I = MesiState.M, MesiState.E, MesiState.S, MesiState.I  # noqa: E741
LEASE = 10


def started(result: Plan | Queued) -> Plan:
    assert isinstance(result, Plan), result
    return result


def read(d: Directory, node: str, now: int = 0, key: str = "k") -> tuple[Plan, Completed]:
    plan = started(d.request_read(key, node, now))
    return plan, d.complete(plan.txn_id, now)


def write(d: Directory, node: str, now: int = 0, key: str = "k") -> tuple[Plan, Completed]:
    plan = started(d.request_write(key, node, now))
    for peer in sorted(plan.invalidate):
        d.ack_invalidate(plan.txn_id, peer, now)
    return plan, d.complete(plan.txn_id, now)


@pytest.fixture
def d() -> Directory:
    return Directory("home", lease_ticks=LEASE)


def test_read_miss_comes_from_memory_and_ends_exclusive(d: Directory) -> None:
    plan, done = read(d, "a")
    assert (plan.supplier, plan.requester_state, plan.version) == (None, E, 0)
    assert (done.state, done.lease_until) == (E, LEASE)
    assert d.owner("k") == "a"


def test_second_reader_is_supplied_by_the_owner_and_both_share(d: Directory) -> None:
    read(d, "a")
    plan, _ = read(d, "b")
    assert (plan.supplier, plan.write_back, plan.downgrade) == ("a", None, frozenset({"a"}))
    assert d.copies("k") == {"a": (S, LEASE), "b": (S, LEASE)}
    plan, _ = read(d, "c")
    assert (plan.supplier, plan.requester_state) == ("a", S)


def test_reader_of_a_modified_line_gets_it_after_a_write_back(d: Directory) -> None:
    write(d, "a")
    plan, done = read(d, "b")
    assert (plan.supplier, plan.write_back, done.version) == ("a", "a", 1)
    assert d.sharers("k") == {"a", "b"} and d.owner("k") is None


def test_write_to_shared_invalidates_every_other_copy_first(d: Directory) -> None:
    for node in "abc":
        read(d, node)
    plan = started(d.request_write("k", "b", 1))
    assert plan.invalidate == {"a", "c"} and plan.version == 1
    assert not d.may_complete(plan.txn_id, 1)
    with pytest.raises(NotReadyError):
        d.complete(plan.txn_id, 1)
    d.ack_invalidate(plan.txn_id, "a", 1)
    assert not d.may_complete(plan.txn_id, 1)
    d.ack_invalidate(plan.txn_id, "c", 1)
    done = d.complete(plan.txn_id, 1)
    assert (done.state, done.version) == (M, 1)
    assert d.copies("k") == {"b": (M, 1 + LEASE)}


def test_write_to_exclusive_needs_no_invalidation(d: Directory) -> None:
    read(d, "a")
    plan, done = write(d, "a")
    assert plan.invalidate == frozenset() and done.state is M


def test_concurrent_writers_are_serialized_and_never_both_m(d: Directory) -> None:
    first = started(d.request_write("k", "a", 0))
    second = d.request_write("k", "b", 0)
    assert isinstance(second, Queued)
    assert d.queued("k") == [second.txn_id]
    done = d.complete(first.txn_id, 0)
    nxt = done.started
    assert nxt is not None and nxt.node == "b" and nxt.invalidate == {"a"}
    assert d.owner("k") == "a"  # b's write has not completed; a is still the only M
    d.ack_invalidate(nxt.txn_id, "a", 0)
    done_b = d.complete(nxt.txn_id, 0)
    assert (done.version, done_b.version) == (1, 2)
    assert d.copies("k") == {"b": (M, LEASE)}


def test_delete_invalidates_everywhere_and_leaves_no_copy(d: Directory) -> None:
    for node in "abc":
        read(d, node)
    plan = started(d.request_delete("k", "a", 0))
    assert plan.kind is TxnKind.DELETE and plan.invalidate == {"b", "c"}
    for peer in plan.invalidate:
        d.ack_invalidate(plan.txn_id, peer, 0)
    done = d.complete(plan.txn_id, 0)
    assert (done.state, done.version, d.copies("k")) == (I, 1, {})
    _, after = read(d, "b")
    assert (after.state, after.version) == (E, 1)


def test_lease_expiry_lets_a_write_proceed_without_an_unreachable_sharer(d: Directory) -> None:
    read(d, "a", now=0)
    read(d, "b", now=2)  # a: S until 10, b: S until 12
    plan = started(d.request_write("k", "c", 3))
    assert plan.wait_until == 12
    d.ack_invalidate(plan.txn_id, "b", 4)
    assert not d.may_complete(plan.txn_id, 9)  # a's lease still runs: it may still serve
    assert d.may_complete(plan.txn_id, 10)
    done = d.complete(plan.txn_id, 10)
    assert d.copies("k") == {"c": (M, 10 + LEASE)} and done.version == 1


def test_departed_node_is_a_fence_until_its_lease_ends(d: Directory) -> None:
    read(d, "a", now=0)
    assert d.node_left("a", 1) == []
    plan, done = read(d, "b", now=2)  # a may still serve E behind a partition
    assert (plan.supplier, done.state) == (None, I)
    plan = started(d.request_write("k", "b", 3))
    assert plan.invalidate == {"a"} and not d.may_complete(plan.txn_id, 9)
    assert d.complete(plan.txn_id, 10).state is M


def test_node_left_aborts_its_running_txn_and_drops_its_queued_ones(d: Directory) -> None:
    read(d, "c", now=0)  # c's copy (lease until 10) keeps a's write from becoming ready
    first = started(d.request_write("k", "a", 0))
    queued = d.request_read("k", "a", 0)
    other = d.request_read("k", "b", 0)
    assert isinstance(queued, Queued) and isinstance(other, Queued)
    plans = d.node_left("a", 1)
    assert [p.txn_id for p in plans] == [other.txn_id]
    assert plans[0].version == 0  # a's write never became ready, so it took no effect
    with pytest.raises(UnknownTransactionError):
        d.complete(first.txn_id, 1)


def test_aborted_ready_write_counts_as_done_and_burns_its_version(d: Directory) -> None:
    plan = started(d.request_write("k", "a", 0))
    assert d.abort(plan.txn_id, 0) is None
    assert d.version("k") == 1 and d.copies("k") == {}
    _, done = write(d, "b")
    assert done.version == 2


def test_stale_eviction_notice_does_not_erase_a_newer_copy(d: Directory) -> None:
    _, old = read(d, "a", now=0)
    _, new = read(d, "a", now=1)
    d.evicted("k", "a", old.grant, 2)
    assert "a" in d.copies("k")
    d.evicted("k", "a", new.grant, 2)
    assert d.copies("k") == {}


def test_eviction_during_a_write_counts_as_the_acknowledgement(d: Directory) -> None:
    _, grant = read(d, "a")
    plan = started(d.request_write("k", "b", 0))
    d.evicted("k", "a", grant.grant, 0)
    assert d.may_complete(plan.txn_id, 0)


def test_renew_extends_a_live_lease_but_not_one_being_invalidated(d: Directory) -> None:
    _, done = read(d, "a", now=0)
    assert d.renew("k", "a", done.grant, 5) == 5 + LEASE
    assert d.renew("k", "a", done.grant + 99, 5) is None
    plan = started(d.request_write("k", "b", 6))
    assert d.renew("k", "a", done.grant, 7) is None
    assert plan.wait_until == 5 + LEASE
    assert d.renew("k", "a", done.grant, 100) is None


def test_new_home_grants_nothing_and_completes_no_write_during_grace() -> None:
    d = Directory("home", lease_ticks=LEASE, grace_until=10)
    plan, done = read(d, "a", now=1)
    assert done.state is I
    plan = started(d.request_write("k", "a", 2))
    assert plan.wait_until == 10 and not d.may_complete(plan.txn_id, 9)
    assert d.complete(plan.txn_id, 10).state is M


def test_time_never_goes_backwards(d: Directory) -> None:
    read(d, "a", now=50)
    _, done = read(d, "b", now=3)  # a late caller's clock is raised to the directory's
    assert done.lease_until == 50 + LEASE


def test_bad_arguments(d: Directory) -> None:
    with pytest.raises(ValueError):
        Directory("h", lease_ticks=0)
    with pytest.raises(UnknownTransactionError):
        d.complete(42, 0)
    with pytest.raises(UnknownTransactionError):
        d.abort(42, 0)
