"""Every MESI state x event transition, written out as the spec (the full 4 x 6 matrix)."""

from __future__ import annotations

import itertools

import pytest

from distcluster_worker.coherence import TABLE, Action, Event, MesiState, transition

M, E, S, I = MesiState.M, MesiState.E, MesiState.S, MesiState.I  # noqa: E741
RD, WR, BRD, BINV = Event.LOCAL_READ, Event.LOCAL_WRITE, Event.BUS_READ, Event.BUS_INVALIDATE
EV, LX = Event.EVICT, Event.LEASE_EXPIRED
WB, SUP, INV = Action.WRITE_BACK, Action.SUPPLY_DATA, Action.INVALIDATE_OTHERS
WT, NOTE, MEM = Action.WRITE_THROUGH, Action.NOTIFY_HOME, Action.READ_MEMORY

SPEC: list[tuple[MesiState, Event, MesiState, tuple[Action, ...]]] = [
    (M, RD, M, ()),
    (M, WR, M, (WT,)),
    (M, BRD, S, (WB, SUP)),
    (M, BINV, I, (WB,)),
    (M, EV, I, (WB, NOTE)),
    (M, LX, I, ()),
    (E, RD, E, ()),
    (E, WR, M, (WT,)),
    (E, BRD, S, (SUP,)),
    (E, BINV, I, ()),
    (E, EV, I, (NOTE,)),
    (E, LX, I, ()),
    (S, RD, S, ()),
    (S, WR, M, (INV, WT)),
    (S, BRD, S, (SUP,)),
    (S, BINV, I, ()),
    (S, EV, I, (NOTE,)),
    (S, LX, I, ()),
    (I, RD, E, (MEM,)),
    (I, WR, M, (INV, WT)),
    (I, BRD, I, ()),
    (I, BINV, I, ()),
    (I, EV, I, ()),
    (I, LX, I, ()),
]


def test_spec_covers_every_state_and_event() -> None:
    assert {(s, e) for s, e, _, _ in SPEC} == set(itertools.product(MesiState, Event))
    assert set(TABLE) == set(itertools.product(MesiState, Event))


@pytest.mark.parametrize(("state", "event", "new_state", "actions"), SPEC)
def test_transition(
    state: MesiState, event: Event, new_state: MesiState, actions: tuple[Action, ...]
) -> None:
    result = transition(state, event)
    assert (result.new_state, result.actions) == (new_state, actions)


def test_read_miss_with_other_copies_ends_shared_from_a_peer() -> None:
    result = transition(I, RD, shared=True)
    assert (result.new_state, result.actions) == (S, (Action.READ_PEER,))


@pytest.mark.parametrize(("state", "event"), list(itertools.product(MesiState, Event)))
def test_shared_flag_matters_only_on_a_read_miss(state: MesiState, event: Event) -> None:
    if (state, event) != (I, RD):
        assert transition(state, event, shared=True) == transition(state, event)


@pytest.mark.parametrize(("state", "event"), list(itertools.product(MesiState, Event)))
def test_only_m_writes_back_and_only_valid_copies_supply(state: MesiState, event: Event) -> None:
    actions = transition(state, event).actions
    assert (WB in actions) <= (state is M)
    assert (SUP in actions) <= state.valid
    if event in (BINV, EV, LX):
        assert transition(state, event).new_state is I
