"""Checkers of the cache simulation: coherence after every step, linearizability at the end.

Coherence (`check_coherence`), counting on each node only the copies it may serve now by
its own clock: per key at most one copy in M or E, and then no other valid copy; and every
valid copy holds what memory holds (writes go through to memory before they complete and
every other copy is gone by then, so a valid copy that differs is a stale read waiting to
be served). The line store and copy table of each node agree and keep their budgets, and
every home's directory passes its full check (all records, the transaction registry).

Linearizability (`check_history`), per key (P-compositionality: a history is linearizable
iff each key's sub-history is, since a register per key is independent of the others), with
the Wing & Gong search as Porcupine runs it: walk the call/return events in time order; at
a call, try to linearize that operation next (the register must allow it) and restart from
the first event; at a return whose call is not linearized yet, undo the last choice.
Memoizing (set of linearized operations, register value) prunes every state already
explored, which keeps the search fast on the short per-key histories a run produces.

A write whose outcome is unknown (error or timeout) returns "at infinity": it may take
effect at any point after its call, including never (last, unobserved). A read without an
answer constrains nothing and is left out. Operations that touch the same step are
concurrent: an operation precedes another only if it returned at a strictly earlier step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from simcache_world import Op

if TYPE_CHECKING:
    from simcache_run import CacheSim

INFINITY = 1 << 62


class CacheInvariantError(Exception):
    """A property the cache promises did not hold; `invariant` names it in one phrase."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


# -- coherence after every step -------------------------------------------------------------


def check_coherence(sim: CacheSim) -> None:
    for key in sim.spec.keys:
        valid: list[tuple[str, str, int, str | None]] = []
        for node in sim.live_nodes():
            if not node.local.copies.valid(key, node.now):
                continue
            line = node.local.store.peek(key)
            if line is None:
                raise CacheInvariantError("copy without a line", f"{node.node_id} {key}")
            valid.append((node.node_id, line.state.value, line.version, line.value))
        _check_key(sim, key, valid)
    for node in sim.live_nodes():
        node.local.check_invariants()
        node.home.directory.check_invariants()


def _check_key(sim: CacheSim, key: str, valid: list[tuple[str, str, int, str | None]]) -> None:
    exclusive = [v for v in valid if v[1] in ("M", "E")]
    if len(exclusive) > 1:
        raise CacheInvariantError("several M/E copies", f"{key}: {valid}")
    if exclusive and len(valid) > 1:
        raise CacheInvariantError("S copy beside an M/E copy", f"{key}: {valid}")
    value, version = sim.memory.current(key)
    for node, state, line_version, line_value in valid:
        if (line_value, line_version) != (value, version):
            raise CacheInvariantError(
                "stale valid copy",
                f"{node} holds {key}={line_value!r} v{line_version} in {state}, "
                f"memory has {value!r} v{version}",
            )


# -- linearizability ------------------------------------------------------------------------


@dataclass
class _Event:
    time: int
    is_call: bool
    op: int
    match: _Event = None  # type: ignore[assignment]  # set right after creation
    prev: _Event = None  # type: ignore[assignment]  # None only for the list's head
    next: _Event | None = None


@dataclass
class Verdict:
    ok: bool
    key: str = ""
    ops: list[Op] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"key {self.key}: no linearization of {len(self.ops)} ops"]
        for op in sorted(self.ops, key=lambda o: (o.call, o.op_id))[:40]:
            ret = "?" if op.ret is None else op.ret
            shown = op.value_out if op.kind == "read" else op.value_in
            lines.append(f"  [{op.call}..{ret}] {op.node} {op.kind} {shown!r}")
        return "\n".join(lines)


def check_history(ops: Iterable[Op]) -> Verdict:
    """Whether the completed history is linearizable as one register per key."""
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    for key in sorted(by_key):
        if not linearizable_register(by_key[key]):
            return Verdict(False, key, by_key[key])
    return Verdict(True)


def _step(state: str | None, op: Op) -> tuple[bool, str | None]:
    if op.kind == "read":
        return op.value_out == state, state
    return True, op.value_in  # a delete writes None


def _build(ops: Sequence[Op]) -> _Event:
    """The events in time order (calls before returns at one step), as a linked list."""
    events: list[_Event] = []
    for index, op in enumerate(ops):
        call = _Event(op.call, True, index)
        ret = _Event(INFINITY if op.ret is None else op.ret, False, index)
        call.match = ret
        events.extend((call, ret))
    events.sort(key=lambda e: (e.time, not e.is_call, e.op))
    head = _Event(-1, False, -1)
    prev = head
    for event in events:
        prev.next, event.prev = event, prev
        prev = event
    return head


def _lift(call: _Event) -> None:
    """Unlink a call and its return (every event but the head has a `prev`)."""
    ret = call.match
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Event) -> None:
    """Link them back, return first, in the places they were unlinked from."""
    ret = call.match
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


def linearizable_register(ops: Sequence[Op], initial: str | None = None) -> bool:
    """Wing & Gong with memoization over one key's operations."""
    head = _build(ops)
    seen: set[tuple[int, str | None]] = set()
    stack: list[tuple[_Event, str | None]] = []
    state, linearized = initial, 0
    entry = head.next
    while head.next is not None:
        if entry is None:
            return False  # cannot happen: the last event is always a return
        if entry.is_call:
            ok, new_state = _step(state, ops[entry.op])
            bits = linearized | (1 << entry.op)
            if ok and (bits, new_state) not in seen:
                seen.add((bits, new_state))
                stack.append((entry, state))
                state, linearized = new_state, bits
                _lift(entry)
                entry = head.next
                continue
            entry = entry.next
            continue
        if not stack:
            return False
        call, state = stack.pop()
        linearized &= ~(1 << call.op)
        _unlift(call)
        entry = call.next
    return True
