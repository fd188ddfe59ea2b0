"""A node's own lines: the `LineStore` (values, states, eviction) kept in step with the
`CopyTable` (grants, serve times, fences, renewals). Pure; the simulation drives it too.

The protocol rules live in the two cores; this class only keeps them consistent: a key has
a line in the store exactly when the copy table holds a copy of it (`check_invariants`),
so every way a copy ends (expiry, refused renewal, invalidation, eviction, a write of our
own) removes the value as well, and every evicted line comes back with its grant and home
so the caller can write back an M line and tell the home.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from distcluster_worker.coherence import (
    CoherenceInvariantError,
    CopyTable,
    Grant,
    Held,
    MesiState,
    Renewal,
    Ticket,
    require,
)
from distcluster_worker.eviction import Line, LineStore, LineTooLargeError


@dataclass(frozen=True, slots=True)
class Evicted:
    key: str
    line: Line
    held: Held


class LocalCache:
    def __init__(self, store: LineStore, copies: CopyTable) -> None:
        self.store = store
        self.copies = copies

    def lookup(self, key: str, now_ms: int) -> Line | None:
        """The line if it may be served now (an access for the eviction policy)."""
        if not self.copies.valid(key, now_ms):
            self.drop(key)
            return None
        return self.store.get(key)

    def begin_read(self, key: str, home: str, now_ms: int) -> Ticket:
        return self.copies.begin_read(key, home, now_ms)

    def begin_write(self, key: str, home: str, now_ms: int) -> Ticket:
        self.store.remove(key)
        return self.copies.begin_write(key, home, now_ms)

    def install(
        self, ticket: Ticket, line: Line, grant: Grant, now_ms: int
    ) -> tuple[Line | None, list[Evicted]]:
        """Store a granted copy if the copy table admits it; returns (the line stored or
        None, lines evicted for it)."""
        admitted = self.copies.admit(ticket, grant, line.state, now_ms)
        if admitted is None:
            return None, []
        state, held = admitted
        line = line.with_state(state)
        try:
            evicted = self.store.put(ticket.key, line)
        except LineTooLargeError:
            self.drop(ticket.key)
            return None, []
        self.copies.hold(ticket.key, held)
        gone = []
        for key, old in evicted:
            old_held = self.copies.evict(key, now_ms)
            if old_held is None:
                raise CoherenceInvariantError(f"{key!r}: a line without a copy record")
            gone.append(Evicted(key, old, old_held))
        return line, gone

    def invalidate(self, key: str, txn: Grant, now_ms: int) -> Line | None:
        """A write at the home drops an older copy (and fences older grants in flight)."""
        if self.copies.invalidate(key, txn, now_ms):
            return self.store.remove(key)
        return None

    def supply(self, key: str, txn: Grant, downgrade: bool, now_ms: int) -> Line | None:
        """Answer a peer's bus_read: the valid line (dropped to S on `downgrade`) or None."""
        if not self.copies.supply(key, txn, downgrade, now_ms):
            return None
        line = self.store.peek(key)
        if line is not None and downgrade and line.state.exclusive:
            line = self.store.set_state(key, MesiState.S)
        return line

    def renewals(self, now_ms: int, within_ms: int) -> dict[str, list[Renewal]]:
        return self.copies.renewals(now_ms, within_ms)

    def renewed(self, answers: Iterable[tuple[Renewal, bool]], sent_ms: int, now_ms: int) -> int:
        """Apply a home's renewal answers; returns how many copies were dropped."""
        dropped = 0
        for (key, grant), ok in answers:
            if self.copies.renewed(key, grant, ok, sent_ms, now_ms):
                self.store.remove(key)
                dropped += 1
        return dropped

    def drop(self, key: str) -> Line | None:
        self.copies.forget(key)
        return self.store.remove(key)

    def purge_expired(self, now_ms: int) -> int:
        expired = self.copies.expire(now_ms)
        for key in expired:
            self.store.remove(key)
        return len(expired)

    def held(self, key: str) -> Held | None:
        return self.copies.held(key)

    def check_invariants(self) -> None:
        """The store and the copy table agree on the keys; the store's budgets hold."""
        require(
            sorted(self.store.keys()) == self.copies.keys(),
            "lines and copy records disagree on the keys",
        )
        self.store.check_invariants()

    def lines(self, now_ms: int) -> list[dict[str, Any]]:
        self.purge_expired(now_ms)
        out = []
        for key in self.copies.keys():
            line = self.store.peek(key)
            held = self.copies.held(key)
            if line is not None and held is not None:
                out.append(
                    {
                        "key": key,
                        "state": line.state.value,
                        "version": line.version,
                        "bytes": line.size_bytes,
                        "lease_left_ms": held.serve_until - now_ms,
                        "home": held.home,
                        "grant": list(held.grant),
                    }
                )
        return out
