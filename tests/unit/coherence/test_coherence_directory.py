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
    grants = {node: read(d, node)[1].grant for node in "abc"}
    plan = started(d.request_write("k", "b", 1, dropped=grants["b"]))
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
    _, held = read(d, "a")
    plan = started(d.request_write("k", "a", 0, dropped=held.grant))
    assert plan.invalidate == frozenset() and d.complete(plan.txn_id, 0).state is M


def test_the_writers_own_newer_copy_is_invalidated_too(d: Directory) -> None:
    """The writer dropped grant 1 when it began; the home since granted it another copy
    (its concurrent read, ordered first), which the writer may be serving: invalidate it."""
    _, old = read(d, "a", now=0)
    _, newer = read(d, "a", now=1)
    plan = started(d.request_write("k", "a", 2, dropped=old.grant))
    assert plan.invalidate == {"a"} and not d.may_complete(plan.txn_id, 2)
    assert d.renew("k", "a", newer.grant, 3) is None  # no renewal while invalidating
    d.ack_invalidate(plan.txn_id, "a", 3)
    assert d.complete(plan.txn_id, 3).state is M
    assert d.copies("k") == {"a": (M, 3 + LEASE)}


def test_a_writer_that_dropped_nothing_but_is_recorded_is_invalidated(d: Directory) -> None:
    read(d, "a", now=0)  # granted, but its reply may never have arrived
    plan = started(d.request_write("k", "a", 1))
    assert plan.invalidate == {"a"} and plan.wait_until == LEASE
    assert d.may_complete(plan.txn_id, LEASE)  # or its lease runs out


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
    grants = {node: read(d, node)[1].grant for node in "abc"}
    plan = started(d.request_delete("k", "a", 0, dropped=grants["a"]))
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


def test_silent_exclusive_supplier_leaves_the_reader_without_a_copy(d: Directory) -> None:
    read(d, "a", now=0)  # a: E
    plan = started(d.request_read("k", "b", 1))
    assert (plan.supplier, plan.downgrade) == ("a", frozenset({"a"}))
    after = d.supplier_failed(plan.txn_id, 1)  # a never answered: it may still hold E
    assert (after.supplier, after.requester_state, after.downgrade) == (None, I, frozenset())
    done = d.complete(plan.txn_id, 1)
    assert (done.state, done.lease_until) == (I, 0)
    assert d.copies("k") == {"a": (E, LEASE)}


def test_silent_sharer_changes_nothing_for_the_reader(d: Directory) -> None:
    read(d, "a", now=0)
    read(d, "b", now=0)  # a and b share
    plan = started(d.request_read("k", "c", 1))
    assert plan.supplier == "a" and plan.downgrade == frozenset()
    assert d.supplier_failed(plan.txn_id, 1).requester_state is S
    assert d.complete(plan.txn_id, 1).state is S
    assert d.sharers("k") == {"a", "b", "c"}


def test_supplier_failed_only_for_a_running_read(d: Directory) -> None:
    plan = started(d.request_write("k", "a", 0))
    with pytest.raises(UnknownTransactionError):
        d.supplier_failed(plan.txn_id, 0)
    with pytest.raises(UnknownTransactionError):
        d.supplier_failed(999, 0)


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


def test_renewal_keeps_a_copy_valid_past_its_first_lease(d: Directory) -> None:
    _, done = read(d, "a", now=0)
    for now in range(5, 50, 5):  # renewed every half lease, long past the first one
        assert d.renew("k", "a", done.grant, now) == now + LEASE
    plan, again = read(d, "b", now=50)
    assert plan.supplier == "a" and again.state is S  # a still counts as a holder


def test_unrenewed_copy_runs_out_and_a_write_waits_only_for_it(d: Directory) -> None:
    _, done = read(d, "a", now=0)
    plan = started(d.request_write("k", "b", 3))
    assert plan.wait_until == LEASE and not d.may_complete(plan.txn_id, LEASE - 1)
    assert d.may_complete(plan.txn_id, LEASE)
    d.complete(plan.txn_id, LEASE)
    assert d.renew("k", "a", done.grant, LEASE + 1) is None  # too late: the copy is gone


def test_renew_refuses_a_lease_that_already_ran_out(d: Directory) -> None:
    _, done = read(d, "a", now=0)
    assert d.renew("k", "a", done.grant, LEASE) is None
    assert d.renew("k", "a", done.grant, LEASE - 1) is None  # time never goes back


def test_renew_all_answers_each_copy_in_order(d: Directory) -> None:
    _, k1 = read(d, "a", now=0, key="k1")
    _, k2 = read(d, "a", now=0, key="k2")
    read(d, "b", now=0, key="k3")
    batch = [("k1", k1.grant), ("k2", k2.grant + 7), ("k3", 1), ("nope", 1)]
    assert d.renew_all("a", batch, 4) == [4 + LEASE, None, None, None]
    assert d.copies("k1") == {"a": (E, 4 + LEASE)}
    assert d.copies("k2") == {"a": (E, LEASE)}  # a wrong grant renews nothing


def test_renewal_never_stretches_a_running_writes_wait(d: Directory) -> None:
    _, done = read(d, "a", now=0)
    plan = started(d.request_write("k", "b", 2))
    assert d.renew_all("a", [("k", done.grant)], 3) == [None]
    assert d.may_complete(plan.txn_id, LEASE)


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
