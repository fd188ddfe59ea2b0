"""Home leases per slot: which node *does* act as a key's home, whatever the views say.

Each node's ring says who *should* be a key's home, but rings are views: during an
asymmetric partition two nodes can each believe they are the home of one key, and a copy
granted by one is then not invalidated by a write through the other. So keys are grouped in
`SLOTS` slots (``slot_of(point)``, the key's ring point modulo `SLOTS`), and a node acts as
the home of a key only while it holds the key's slot in Redis, which grants each slot to at
most one node at a time (a key with an expiry, set only if absent, renewed only by the node
holding it with the same tenure). The ring picks the wanted holder of slot ``s``: the owner
of ``slot_name(s)``.

`SlotTable` is this node's side of those leases, pure: `plan` says which slots one round
asks for (acquire or renew the wanted ones, release the others); `answered` records what
Redis said. For each slot held it keeps

* the tenure: a number Redis hands out at each acquisition (a counter), which fences the
  home's writes to Redis (a write lands only while the slot still holds this tenure);
* ``held_until``: the round's *send* time plus the lease minus a 10% margin, on this node's
  monotonic clock. Redis counts its expiry from when it ran the round, later, so a slow
  message or a clock running a little fast only makes this node stop early;
* ``grants_from``: one copy lease after the *answer* of the round that acquired it. The
  previous holder stopped granting and renewing copies when its own ``held_until`` passed,
  before Redis let the slot go; each of its copies runs out at most a copy lease later. Until
  then the new holder grants no copy and completes no write.

A slot whose local lease ran out stays in the table with its tenure: the next round may still
renew it (Redis kept it if nobody took it), which is safe because nobody else held it in
between; a slot Redis gave to another node is dropped and its holder remembered (for the
``not_home`` answer that names it). A released slot stops counting at once, before Redis
hears of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from distcluster_worker.coherence.errors import require

#: Number of slots. Enough for an even spread over a handful of nodes (each holds about
#: 256/n), few enough that one round asks for all of a node's slots in one script.
SLOTS = 256


def slot_of(point: int) -> int:
    """The slot of a key from its stable ring point (`ring.key_point`)."""
    return point % SLOTS


def slot_name(slot: int) -> str:
    """The name the ring places to decide which node should hold `slot`."""
    return f"slot-{slot}"


def wanted_slots(owner: Callable[[str], str], node_id: str) -> frozenset[int]:
    """The slots whose ring owner (by this node's view) is `node_id`."""
    return frozenset(s for s in range(SLOTS) if owner(slot_name(s)) == node_id)


class Outcome(IntEnum):
    """What a round did to one wanted slot (the Lua script's status codes)."""

    OTHER = 0  # held by another node (or by this node under a tenure it no longer knows)
    ACQUIRED = 1
    RENEWED = 2


@dataclass(frozen=True, slots=True)
class Answer:
    """Redis' answer for one wanted slot: the outcome, the holder and its tenure."""

    slot: int
    outcome: Outcome
    holder: str
    tenure: int


@dataclass(frozen=True, slots=True)
class Round:
    """One round's request: `want` and `release` as ``(slot, tenure)``, tenure 0 when this
    node holds no tenure of the slot; `sent_ms` when it was planned."""

    sent_ms: int
    want: tuple[tuple[int, int], ...]
    release: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class Tenure:
    tenure: int
    held_until: int
    grants_from: int


@dataclass(frozen=True, slots=True)
class Changes:
    """Slots gained and lost by one answer (for logs and metrics)."""

    acquired: tuple[int, ...] = ()
    lost: tuple[int, ...] = ()


class SlotTable:
    def __init__(self, node_id: str, *, lease_ms: int, copy_lease_ms: int) -> None:
        require(lease_ms > 0 and copy_lease_ms > 0, "leases must be positive")
        self.node_id = node_id
        self.lease_ms = lease_ms
        self.copy_lease_ms = copy_lease_ms
        self._held: dict[int, Tenure] = {}
        self._holders: dict[int, str] = {}

    @property
    def hold_ms(self) -> int:
        """How long after a round's send time this node counts a slot it won: the lease
        minus a 10% margin (as copies are served for 90% of theirs)."""
        return self.lease_ms - max(1, self.lease_ms // 10)

    # -- rounds ------------------------------------------------------------------------

    def plan(self, wanted: Iterable[int], now_ms: int) -> Round:
        """The next round: acquire or renew every wanted slot, release every other slot
        this node holds (which stop counting now)."""
        want = sorted(set(wanted))
        require(all(0 <= s < SLOTS for s in want), "a wanted slot is out of range")
        release = tuple((s, t.tenure) for s, t in sorted(self._held.items()) if s not in want)
        for slot, _ in release:
            del self._held[slot]
        known = tuple((s, self._held[s].tenure if s in self._held else 0) for s in want)
        return Round(now_ms, known, release)

    def answered(self, sent: Round, answers: Sequence[Answer], now_ms: int) -> Changes:
        """Record Redis' answers to `sent` (one per wanted slot, in order), received at
        `now_ms`."""
        require(len(answers) == len(sent.want), "one answer per wanted slot")
        acquired: list[int] = []
        lost: list[int] = []
        for (slot, asked), answer in zip(sent.want, answers, strict=True):
            require(answer.slot == slot, "answers come in the order of the round")
            if answer.outcome is Outcome.ACQUIRED:
                grants_from = now_ms + self.copy_lease_ms
                self._held[slot] = Tenure(answer.tenure, sent.sent_ms + self.hold_ms, grants_from)
                self._holders.pop(slot, None)
                acquired.append(slot)
            elif answer.outcome is Outcome.RENEWED and slot in self._held:
                require(answer.tenure == asked, "a renewal keeps the tenure")
                held = self._held[slot]
                until = max(held.held_until, sent.sent_ms + self.hold_ms)
                self._held[slot] = Tenure(held.tenure, until, held.grants_from)
            else:
                if self._held.pop(slot, None) is not None:
                    lost.append(slot)
                self._holders[slot] = answer.holder
        return Changes(tuple(acquired), tuple(lost))

    # -- questions ---------------------------------------------------------------------

    def holds(self, slot: int, now_ms: int) -> bool:
        """Whether this node may act as the home of the slot's keys now (order their
        transactions, write them to Redis)."""
        held = self._held.get(slot)
        return held is not None and now_ms < held.held_until

    def grants_from(self, slot: int) -> int:
        """From when this node may grant copies of the slot's keys and complete writes
        (only meaningful while it `holds` the slot)."""
        held = self._held.get(slot)
        return held.grants_from if held is not None else 1 << 62

    def tenure(self, slot: int) -> int | None:
        held = self._held.get(slot)
        return held.tenure if held is not None else None

    def holder(self, slot: int, now_ms: int) -> str | None:
        """Who holds the slot as far as this node knows: itself while it `holds` it, else the
        holder the last round named (None if unknown or if that was this node)."""
        if self.holds(slot, now_ms):
            return self.node_id
        other = self._holders.get(slot)
        return other if other != self.node_id else None

    def held(self, now_ms: int) -> list[int]:
        """The slots this node holds now."""
        return [s for s in sorted(self._held) if self.holds(s, now_ms)]


class InMemorySlots:
    """Redis' side of the slot leases, in memory: the twin of `cache_role/slots.py`'s round
    script and of the slot check of `store.py`'s write, on a clock the caller passes (ms).
    A slot holds (node, tenure) until it expires; tenures come from one counter."""

    def __init__(self, lease_ms: int) -> None:
        self.lease_ms = lease_ms
        self.keys: dict[int, tuple[str, int, int]] = {}  # slot -> (node, tenure, expires)
        self.counter = 0

    def _current(self, slot: int, now_ms: int) -> tuple[str, int, int] | None:
        cur = self.keys.get(slot)
        if cur is not None and cur[2] <= now_ms:
            del self.keys[slot]
            return None
        return cur

    def run(self, node: str, sent: Round, now_ms: int) -> list[Answer]:
        """One round of `node`, run at `now_ms`: answers for its wanted slots."""
        answers = [self._want(node, slot, asked, now_ms) for slot, asked in sent.want]
        for slot, tenure in sent.release:
            cur = self._current(slot, now_ms)
            if cur is not None and cur[:2] == (node, tenure):
                del self.keys[slot]
        return answers

    def _want(self, node: str, slot: int, asked: int, now_ms: int) -> Answer:
        cur = self._current(slot, now_ms)
        if cur is None:
            self.counter += 1
            self.keys[slot] = (node, self.counter, now_ms + self.lease_ms)
            return Answer(slot, Outcome.ACQUIRED, node, self.counter)
        if asked and cur[:2] == (node, asked):
            self.keys[slot] = (node, asked, now_ms + self.lease_ms)
            return Answer(slot, Outcome.RENEWED, node, asked)
        return Answer(slot, Outcome.OTHER, cur[0], cur[1])

    def fenced(self, slot: int, node: str, tenure: int | None, now_ms: int) -> bool:
        """Whether a write by `node` under `tenure` may land: the slot still holds it."""
        cur = self._current(slot, now_ms)
        return cur is not None and cur[:2] == (node, tenure)
