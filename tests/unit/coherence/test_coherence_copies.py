"""The node side of the protocol (`CopyTable`): one test per rule of installing, serving,
invalidating and renewing a copy. Times are the node's ms; serve time 90, home "h"."""

from __future__ import annotations

import pytest

from distcluster_worker.coherence import CopyTable, Fences, Held, MesiState, Ticket

M, E, S, I = MesiState.M, MesiState.E, MesiState.S, MesiState.I  # noqa: E741
SERVE = 90


@pytest.fixture
def t() -> CopyTable:
    return CopyTable(SERVE, fence_keep_ms=200)


def install(t: CopyTable, ticket: Ticket, txn: int, state: MesiState, now: int) -> Held | None:
    admitted = t.admit(ticket, (1, txn), state, now)
    if admitted is None:
        return None
    t.hold(ticket.key, admitted[1])
    return admitted[1]


def test_a_copy_is_served_until_send_time_plus_serve_time(t: CopyTable) -> None:
    ticket = t.begin_read("k", "h", now_ms=10)
    held = install(t, ticket, 1, E, now=40)  # the reply took 30 ms
    assert held is not None and held.serve_until == 10 + SERVE and held.home == "h"
    assert t.valid("k", 10 + SERVE - 1) and not t.valid("k", 10 + SERVE)


def test_late_invalid_fenced_or_older_replies_are_refused(t: CopyTable) -> None:
    late = t.begin_read("k", "h", 0)
    assert t.admit(late, (1, 1), E, SERVE) is None  # its serve time is already over
    assert t.admit(t.begin_read("k", "h", 0), (1, 1), I, 0) is None
    t.invalidate("k", (1, 5), 0)  # a write (txn 5) overtook the reply of grant 4
    assert t.admit(t.begin_read("k", "h", 0), (1, 4), S, 0) is None
    assert install(t, t.begin_read("k", "h", 0), 6, S, 0) is not None
    assert t.admit(t.begin_read("k", "h", 0), (1, 6), S, 0) is None  # not newer than held
    assert t.admit(t.begin_read("k", "h", 0), (0, 99), S, 0) is None  # a previous epoch


def test_an_exclusive_grant_older_than_a_downgrade_arrives_as_s(t: CopyTable) -> None:
    ticket = t.begin_read("k", "h", 0)
    assert not t.supply("k", (1, 8), downgrade=True, now_ms=1)  # nothing to supply yet
    admitted = t.admit(ticket, (1, 7), E, 2)
    assert admitted is not None and admitted[0] is S
    admitted = t.admit(t.begin_read("k", "h", 2), (1, 9), E, 2)
    assert admitted is not None and admitted[0] is E  # granted after the downgrade


def test_a_write_drops_the_copy_at_once_and_names_it(t: CopyTable) -> None:
    install(t, t.begin_read("k", "h", 0), 1, S, 0)
    write = t.begin_write("k", "h", 2)
    assert not t.valid("k", 2) and write.dropped == (1, 1)
    assert install(t, write, 2, M, 4) is not None  # the write's own grant installs
    assert t.begin_write("j", "h", 5).dropped is None  # nothing held for that key


def test_no_reply_installs_once_a_later_write_of_ours_began(t: CopyTable) -> None:
    read = t.begin_read("k", "h", 0)
    first = t.begin_write("k", "h", 1)
    second = t.begin_write("k", "h", 2)  # e.g. a delete after the put
    assert t.admit(read, (1, 3), S, 3) is None
    assert t.admit(first, (1, 4), M, 3) is None  # the home may order it either way
    assert t.admit(second, (1, 5), M, 3) is not None
    during = t.begin_read("k", "h", 3)  # sent after both began: the home orders it
    assert t.admit(during, (1, 6), S, 4) is not None
    t.begin_write("j", "h", 4)  # writes to other keys do not interfere
    assert t.admit(second, (1, 5), M, 5) is not None


def test_a_write_passes_its_own_invalidation_of_the_writers_older_copy(t: CopyTable) -> None:
    write = t.begin_write("k", "h", 0)
    install(t, t.begin_read("k", "h", 1), 3, S, 1)  # our concurrent read, ordered first
    assert t.invalidate("k", (1, 4), 2)  # the write (txn 4) invalidates that copy
    assert t.admit(t.begin_read("k", "h", 1), (1, 3), S, 3) is None
    assert install(t, write, 4, M, 3) is not None


def test_an_evicted_copy_fences_older_grants(t: CopyTable) -> None:
    """Our write (grant 14) and then our read (15, ordered after it) are in flight; the
    read's copy arrives, is evicted (the home forgets it), then the write's reply comes."""
    write = t.begin_write("k", "h", 0)
    install(t, t.begin_read("k", "h", 1), 15, E, 2)
    evicted = t.evict("k", 3)
    assert evicted is not None and evicted.grant == (1, 15)
    assert t.admit(write, (1, 14), M, 4) is None
    assert install(t, t.begin_read("k", "h", 5), 16, S, 6) is not None
    assert t.evict("nothing", 7) is None


def test_invalidation_drops_older_copies_and_keeps_newer_ones(t: CopyTable) -> None:
    install(t, t.begin_read("k", "h", 0), 3, S, 0)
    assert not t.invalidate("k", (1, 2), 1)  # a late invalidation of an older write
    assert t.valid("k", 1)
    assert t.invalidate("k", (1, 4), 1)
    assert not t.valid("k", 1)


def test_supply_only_from_a_copy_still_in_serve_time(t: CopyTable) -> None:
    install(t, t.begin_read("k", "h", 0), 1, E, 0)
    assert t.supply("k", (1, 2), downgrade=False, now_ms=SERVE - 1)
    assert not t.supply("k", (1, 2), downgrade=False, now_ms=SERVE)


def test_renewals_batch_copies_per_home_that_run_out_soon(t: CopyTable) -> None:
    install(t, t.begin_read("a", "h1", 0), 1, S, 0)  # serve until 90
    install(t, t.begin_read("b", "h1", 40), 2, S, 40)  # until 130
    install(t, t.begin_read("c", "h2", 0), 3, E, 0)  # until 90
    assert t.renewals(50, within_ms=45) == {"h1": [("a", (1, 1))], "h2": [("c", (1, 3))]}
    assert t.renewals(50, within_ms=80) == {
        "h1": [("a", (1, 1)), ("b", (1, 2))],
        "h2": [("c", (1, 3))],
    }
    assert t.renewals(90, within_ms=80) == {"h1": [("b", (1, 2))]}  # a, c are over


def test_renewal_answers_extend_from_send_time_or_drop(t: CopyTable) -> None:
    install(t, t.begin_read("a", "h", 0), 1, S, 0)
    install(t, t.begin_read("b", "h", 0), 2, S, 0)
    assert not t.renewed("a", (1, 1), True, sent_ms=60, now_ms=65)
    assert t.valid("a", 60 + SERVE - 1) and not t.valid("a", 60 + SERVE)
    assert t.renewed("b", (1, 2), False, sent_ms=60, now_ms=65)
    assert not t.valid("b", 65)
    assert not t.renewed("a", (1, 99), False, sent_ms=70, now_ms=75)  # a grant not held
    assert t.valid("a", 75)
    assert not t.renewed("a", (1, 1), True, sent_ms=10, now_ms=75)  # never shortens
    assert t.valid("a", 60 + SERVE - 1)


def test_a_renewal_answer_never_revives_a_copy_that_ran_out(t: CopyTable) -> None:
    install(t, t.begin_read("a", "h", 0), 1, E, 0)
    # Renewal sent at 80; before its answer the copy ran out (at 90) and a peer's read
    # through the home found no copy here, so the home recorded this copy as S.
    assert not t.supply("a", (1, 2), downgrade=True, now_ms=91)
    assert t.renewed("a", (1, 1), True, sent_ms=80, now_ms=92)
    assert not t.valid("a", 92) and t.held("a") is None


def test_expire_forgets_copies_old_fences_and_write_marks(t: CopyTable) -> None:
    install(t, t.begin_read("a", "h", 0), 1, S, 0)
    t.invalidate("x", (1, 9), 0)
    before = t.begin_read("w", "h", 0)
    t.begin_write("w", "h", 0)
    assert t.expire(SERVE - 1) == [] and len(t) == 1
    assert t.expire(SERVE) == ["a"] and len(t) == 0
    t.expire(200)
    assert len(t.fences) == 0
    assert t.admit(t.begin_read("x", "h", 200), (1, 1), S, 200) is not None
    assert t.admit(before, (1, 2), S, 200) is None  # forgotten mark, refused as late


def test_fences_order_and_prune() -> None:
    f = Fences(keep_ms=10)
    f.invalidated("k", (1, 5), 0)
    assert not f.admits("k", (1, 4)) and f.admits("k", (1, 5)) and f.admits("x", (0, 0))
    f.downgraded("k", (1, 7), 0)
    assert f.must_share("k", (1, 6)) and not f.must_share("k", (1, 8))
    f.prune(10)
    assert len(f) == 0 and f.admits("k", (1, 1))
    with pytest.raises(ValueError):
        Fences(keep_ms=0)
    with pytest.raises(ValueError):
        CopyTable(0, fence_keep_ms=1)
