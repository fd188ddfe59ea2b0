"""The MESI state machine of one node's line, as a total table.

`transition(state, event)` is a pure lookup: every (state, event) pair has exactly one row,
so no combination can fall through to a default by accident, and the table test checks
all of them. The node-local machine cannot know, on a read miss, whether other copies
exist; classic MESI reads the bus's SHARED line for that, here the home directory answers.
That answer comes in as `shared`: a miss with other copies ends in S (data from a peer),
without ends in E (data from memory).

Choices worth stating:

* Every write, even a hit in E or M, is written through to Redis before the PUT answers.
  A value that lived only in one node's memory would be lost with that node, and the design
  promises that a completed PUT is never followed by an older read. M therefore means
  "the one copy this node may write", and the write-back on leaving M is a version-fenced
  no-op in normal operation; it is kept so that a shell that defers write-through (a
  write-behind option) stays correct.
* E -> M is silent with respect to peers (no invalidations: there are no other copies), but
  the write still passes through the home directory, which hands out the version.
* A lost lease ends a copy without a write-back: once the lease has run out the home may
  already have ordered a newer write, and a late write-back could only be refused by its
  version fence anyway.
* Evicting a valid copy notifies the home so that later reads are not sent to a node that
  no longer has the data; the notice carries the grant id so a late one cannot erase a
  newer copy (see `Directory.evicted`).
"""

from __future__ import annotations

from dataclasses import dataclass

from distcluster_worker.coherence.states import Action, Event, MesiState

M, E, S = MesiState.M, MesiState.E, MesiState.S
I = MesiState.I  # noqa: E741 - the protocol's own name for the state


@dataclass(frozen=True, slots=True)
class Transition:
    new_state: MesiState
    actions: tuple[Action, ...] = ()


def _row(state: MesiState, *actions: Action) -> Transition:
    return Transition(state, tuple(actions))


_WB, _SUP, _INV = Action.WRITE_BACK, Action.SUPPLY_DATA, Action.INVALIDATE_OTHERS
_WT, _NOTE = Action.WRITE_THROUGH, Action.NOTIFY_HOME

TABLE: dict[tuple[MesiState, Event], Transition] = {
    (M, Event.LOCAL_READ): _row(M),
    (M, Event.LOCAL_WRITE): _row(M, _WT),
    (M, Event.BUS_READ): _row(S, _WB, _SUP),
    (M, Event.BUS_INVALIDATE): _row(I, _WB),
    (M, Event.EVICT): _row(I, _WB, _NOTE),
    (M, Event.LEASE_EXPIRED): _row(I),
    (E, Event.LOCAL_READ): _row(E),
    (E, Event.LOCAL_WRITE): _row(M, _WT),
    (E, Event.BUS_READ): _row(S, _SUP),
    (E, Event.BUS_INVALIDATE): _row(I),
    (E, Event.EVICT): _row(I, _NOTE),
    (E, Event.LEASE_EXPIRED): _row(I),
    (S, Event.LOCAL_READ): _row(S),
    (S, Event.LOCAL_WRITE): _row(M, _INV, _WT),
    (S, Event.BUS_READ): _row(S, _SUP),
    (S, Event.BUS_INVALIDATE): _row(I),
    (S, Event.EVICT): _row(I, _NOTE),
    (S, Event.LEASE_EXPIRED): _row(I),
    (I, Event.LOCAL_READ): _row(E, Action.READ_MEMORY),
    (I, Event.LOCAL_WRITE): _row(M, _INV, _WT),
    (I, Event.BUS_READ): _row(I),
    (I, Event.BUS_INVALIDATE): _row(I),
    (I, Event.EVICT): _row(I),
    (I, Event.LEASE_EXPIRED): _row(I),
}

_SHARED_MISS = _row(S, Action.READ_PEER)


def transition(state: MesiState, event: Event, *, shared: bool = False) -> Transition:
    """The next state of a line and the actions to take, in order.

    `shared` matters only for a read miss (I, local_read): it is the home's answer to
    "does another node hold a copy?".
    """
    if shared and state is I and event is Event.LOCAL_READ:
        return _SHARED_MISS
    return TABLE[(state, event)]
