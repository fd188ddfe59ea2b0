"""A node's own copies: the `LineStore` plus, per line, its grant, lease end and home. Pure.

Rules (time is the caller's monotonic ms):

* a line is served only before its lease end (``expires``), counted from when the node
  sent the request that got it, minus a drift margin, so it ends before the home's lease;
  an expired line is dropped on sight and the read goes to the home again;
* ``install`` refuses a grant fenced by an invalidation seen earlier, a grant older than
  the line already held, and a lease already over; an exclusive grant older than a
  downgrade seen earlier is installed as S;
* evicted lines come back with their grant and home, so the caller can write back M
  lines and tell the home.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distcluster_worker.cache_role.fences import Fences, Grant
from distcluster_worker.coherence import MesiState
from distcluster_worker.eviction import Line, LineStore, LineTooLargeError


@dataclass(frozen=True, slots=True)
class Held:
    grant: Grant
    expires_ms: int
    home: str


@dataclass(frozen=True, slots=True)
class Evicted:
    key: str
    line: Line
    held: Held


class LocalCache:
    def __init__(self, store: LineStore, fences: Fences) -> None:
        self.store = store
        self.fences = fences
        self._held: dict[str, Held] = {}

    def lookup(self, key: str, now_ms: int) -> Line | None:
        """The line if it may be served now (an access for the eviction policy)."""
        held = self._held.get(key)
        if held is None:
            return None
        if held.expires_ms <= now_ms:
            self.drop(key)
            return None
        return self.store.get(key)

    def install(
        self,
        key: str,
        line: Line,
        held: Held,
        now_ms: int,
    ) -> tuple[Line | None, list[Evicted]]:
        """Store a granted copy; returns (the line stored or None, lines evicted for it)."""
        if not line.state.valid or held.expires_ms <= now_ms:
            return None, []
        if not self.fences.admits(key, held.grant):
            return None, []
        current = self._held.get(key)
        if current is not None and current.grant >= held.grant:
            return None, []
        if line.state.exclusive and self.fences.must_share(key, held.grant):
            line = line.with_state(MesiState.S)
        try:
            evicted = self.store.put(key, line)
        except LineTooLargeError:
            self.drop(key)
            return None, []
        self._held[key] = held
        return line, [Evicted(k, old, self._held.pop(k)) for k, old in evicted]

    def invalidate(self, key: str, txn: Grant, now_ms: int) -> Line | None:
        """A write at the home drops this copy (and fences older grants in flight)."""
        self.fences.invalidated(key, txn, now_ms)
        return self.drop(key)

    def supply(self, key: str, txn: Grant, downgrade: bool, now_ms: int) -> Line | None:
        """Answer a peer's bus_read: the valid line (dropped to S on `downgrade`) or None."""
        if downgrade:
            self.fences.downgraded(key, txn, now_ms)
        held = self._held.get(key)
        line = self.store.peek(key)
        if held is None or line is None or held.expires_ms <= now_ms:
            return None
        if downgrade and line.state.exclusive:
            self.store.set_state(key, MesiState.S)
        return line

    def drop(self, key: str) -> Line | None:
        self._held.pop(key, None)
        return self.store.remove(key)

    def purge_expired(self, now_ms: int) -> int:
        expired = [k for k, h in self._held.items() if h.expires_ms <= now_ms]
        for key in expired:
            self.drop(key)
        self.fences.prune(now_ms)
        return len(expired)

    def held(self, key: str) -> Held | None:
        return self._held.get(key)

    def lines(self, now_ms: int) -> list[dict[str, Any]]:
        self.purge_expired(now_ms)
        out = []
        for key in sorted(self._held):
            line = self.store.peek(key)
            held = self._held[key]
            if line is not None:
                out.append(
                    {
                        "key": key,
                        "state": line.state.value,
                        "version": line.version,
                        "bytes": line.size_bytes,
                        "lease_left_ms": held.expires_ms - now_ms,
                        "home": held.home,
                        "grant": list(held.grant),
                    }
                )
        return out
