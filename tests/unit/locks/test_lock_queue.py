"""Waiting: FIFO order, no writer starvation, hand-over on release and expiry, timeouts."""

from __future__ import annotations

from lock_driver import Driver

from distcluster_worker.locks import Cancelled, Expired, Granted, Queued, Refused, Released


def test_waiters_are_granted_in_fifo_order(d: Driver) -> None:
    d.acquire("r", "a")
    assert d.acquire("r", "b", wait_ms=9_000, request_id="b1") == [Queued("b1", "r", 1)]
    assert d.acquire("r", "c", wait_ms=9_000, request_id="c1") == [Queued("c1", "r", 2)]
    assert d.release("r", "a", 1, request_id="rel") == [
        Released("rel", "r", "a", 1),
        Granted("b1", "r", "b", "exclusive", 4, 11_000),
    ]
    assert d.release("r", "b", 4)[1] == Granted("c1", "r", "c", "exclusive", 5, 11_000)


def test_a_waiting_writer_blocks_later_readers(d: Driver) -> None:
    d.acquire("r", "a", "shared")
    d.acquire("r", "w", wait_ms=9_000, request_id="w1")
    # Shared holders only, but a writer waits: the reader must queue behind it.
    assert d.acquire("r", "b", "shared", wait_ms=9_000, request_id="b1") == [Queued("b1", "r", 2)]
    assert d.release("r", "a", 1)[1:] == [Granted("w1", "r", "w", "exclusive", 4, 11_000)]
    assert d.release("r", "w", 4)[1:] == [Granted("b1", "r", "b", "shared", 5, 11_000)]


def test_shared_run_is_granted_together_up_to_the_next_writer(d: Driver) -> None:
    d.acquire("r", "a")
    d.acquire("r", "b", "shared", wait_ms=9_000, request_id="b1")
    d.acquire("r", "c", "shared", wait_ms=9_000, request_id="c1")
    d.acquire("r", "e", wait_ms=9_000, request_id="e1")
    d.acquire("r", "f", "shared", wait_ms=9_000, request_id="f1")
    assert d.release("r", "a", 1)[1:] == [
        Granted("b1", "r", "b", "shared", 6, 11_000),
        Granted("c1", "r", "c", "shared", 6, 11_000),
    ]
    assert [w["request_id"] for w in d.table.view("r")["waiters"]] == ["e1", "f1"]


def test_expiry_hands_over_in_the_same_entry_with_that_entry_token(d: Driver) -> None:
    d.acquire("r", "a", ttl_ms=1_000)
    d.acquire("r", "b", wait_ms=5_000, request_id="b1")
    assert d.table.next_deadline_ms() == 2_000
    # Any command past the deadline settles time first, then does its own work.
    assert d.at(2_500).acquire("other", "z", request_id="z1") == [
        Expired("r", "a", 1),
        Granted("b1", "r", "b", "exclusive", 3, 12_500),
        Granted("z1", "other", "z", "exclusive", 3, 12_500),
    ]


def test_expire_command_only_settles_time(d: Driver) -> None:
    d.acquire("r", "a", ttl_ms=1_000)
    assert d.at(1_999).expire() == []
    assert d.at(2_000).expire() == [Expired("r", "a", 1)]
    assert d.table.resources() == [] and d.table.next_deadline_ms() is None
    assert d.table.clock_ms == 2_000


def test_clock_never_goes_back(d: Driver) -> None:
    d.at(5_000).expire()
    d.at(1_000).acquire("r", "a", ttl_ms=100, request_id="x")
    assert d.table.clock_ms == 5_000
    assert d.table.view("r")["holders"][0]["expires_at_ms"] == 5_100


def test_waiter_times_out_at_its_deadline(d: Driver) -> None:
    d.acquire("r", "a")
    d.acquire("r", "b", wait_ms=500, request_id="b1")
    assert d.table.next_deadline_ms() == 1_500
    timeout = Refused("b1", "timeout", "not granted 'r' before the deadline", holders=("a",))
    assert d.at(1_500).expire() == [timeout]
    assert d.table.view("r")["waiters"] == []
    assert d.acquire("r", "b", wait_ms=500, request_id="b1") == [timeout]


def test_lease_ending_at_a_waiters_deadline_goes_to_that_waiter(d: Driver) -> None:
    d.acquire("r", "a", ttl_ms=500)
    d.acquire("r", "b", wait_ms=500, request_id="b1")
    assert d.at(1_500).expire() == [
        Expired("r", "a", 1),
        Granted("b1", "r", "b", "exclusive", 3, 11_500),
    ]


def test_timed_out_writer_unblocks_the_readers_behind_it(d: Driver) -> None:
    d.acquire("r", "a", "shared")
    d.acquire("r", "w", wait_ms=500, request_id="w1")
    d.acquire("r", "b", "shared", wait_ms=5_000, request_id="b1")
    [timeout, granted] = d.at(1_600).expire()
    assert isinstance(timeout, Refused) and timeout.code == "timeout"
    assert granted == Granted("b1", "r", "b", "shared", 4, 11_600)


def test_cancel_drops_the_waiter_and_is_its_final_outcome(d: Driver) -> None:
    d.acquire("r", "a", "shared")
    d.acquire("r", "w", wait_ms=5_000, request_id="w1")
    d.acquire("r", "b", "shared", wait_ms=5_000, request_id="b1")
    assert d.cancel("w1") == [
        Cancelled("w1", "r"),
        Granted("b1", "r", "b", "shared", 4, 11_000),
    ]
    assert d.cancel("w1") == []
    assert d.acquire("r", "w", request_id="w1") == [Cancelled("w1", "r")]


def test_cancel_of_unknown_or_granted_request_is_a_no_op(d: Driver) -> None:
    d.acquire("r", "a", request_id="a1")
    before = d.table.snapshot()
    assert d.cancel("nobody") == []
    assert d.cancel("a1") == []
    assert d.table.view("r")["holders"][0]["owner"] == "a"
    assert d.table.snapshot().replace('"last_index":3', '"last_index":1') == before


def test_queued_position_follows_the_queue(d: Driver) -> None:
    d.acquire("r", "a")
    d.acquire("r", "b", wait_ms=9_000, request_id="b1")
    d.acquire("r", "c", wait_ms=9_000, request_id="c1")
    d.cancel("b1")
    assert d.acquire("r", "c", wait_ms=9_000, request_id="c1") == [Queued("c1", "r", 1)]
    assert d.table.view("r")["waiters"] == [
        {"owner": "c", "mode": "exclusive", "request_id": "c1", "deadline_ms": 10_000}
    ]
