"""The node side of the protocol: which copies a node may serve, and which replies it may
install. Pure: time is the node's own monotonic clock in ms, passed in by the caller.

The home counts a copy until ``now_home + lease``; the node serves it only until
``sent + serve_ms``, where ``sent`` is when the node sent the request that got the grant
(or the renewal that extended it) and ``serve_ms`` is the lease minus a margin for
clock-rate drift. The home acts after the node sent, so the node stops serving before the
home stops counting the copy, whatever the network did to the messages in between.

Rules for installing a reply (`admit`), each closing a race the simulation found or would:

* the state is valid and the serve time is not already over (a reply can be late);
* no invalidation fence above the grant: a write that replaced this value was seen (its
  invalidation overtook the reply);
* no newer grant is held already (replies of two requests can arrive in either order),
  nor was one evicted (`evict` fences older grants, since the eviction notice makes the
  home forget the copy);
* no write of this node on the key began after the request was sent: that write dropped
  the node's copy and told the home which one (see below), so a reply installed after it
  began would be a copy the write does not invalidate (the home records only the node's
  latest grant, which may be a newer one);
* an exclusive grant older than a downgrade fence is installed as S (a peer's read was
  served from this node's copy before the grant arrived).

A write drops the node's copy when it begins (`begin_write`), so the node never serves its
old value once the write may have completed, and tells the home which copy it dropped.
A copy installed while the write runs, from a request sent after it began (the node's
own concurrent read or write) that the home ordered before the write, is recorded at the
home under another grant, so the write invalidates it (`Directory.request_write`).

Renewal: every interval the node asks each home, in one batch, to renew the copies that run
out within ``within_ms`` (`renewals`); a renewed copy is served until the renewal's send
time plus ``serve_ms``; a refused one is dropped, and so is one whose serve time ended
before the answer came (`renewed`). A node that cannot reach a home therefore stops
serving that home's copies at most ``serve_ms`` after its last successful renewal was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from distcluster_worker.coherence.fences import Fences, Grant
from distcluster_worker.coherence.states import MesiState


@dataclass(frozen=True, slots=True)
class Held:
    """A copy this node holds: the grant that made it, until when it may serve it, and the
    home that granted it (where renewals and eviction notices go)."""

    grant: Grant
    serve_until: int
    home: str


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request of this node to a key's home, taken when it is sent; a write's ticket
    names the copy it `dropped` (see `Directory.request_write`)."""

    key: str
    home: str
    sent_ms: int
    seq: int  # writes this node began before sending (for a write: its own number)
    dropped: Grant | None = None


Renewal = tuple[str, Grant]  # (key, grant) of one copy to renew


class CopyTable:
    def __init__(self, serve_ms: int, *, fence_keep_ms: int) -> None:
        if serve_ms <= 0:
            raise ValueError("serve_ms must be positive")
        self.serve_ms = serve_ms
        self.fences = Fences(fence_keep_ms)
        self._held: dict[str, Held] = {}
        self._writes = 0
        self._last_write: dict[str, tuple[int, int]] = {}  # key -> (write number, began ms)

    # -- requests to the home ------------------------------------------------------------

    def begin_read(self, key: str, home: str, now_ms: int) -> Ticket:
        return Ticket(key, home, now_ms, self._writes)

    def begin_write(self, key: str, home: str, now_ms: int) -> Ticket:
        """Start a write (or delete): the held copy goes at once, so the node never serves
        its old value once the write may have completed; the caller drops the line too."""
        self._writes += 1
        self._last_write[key] = (self._writes, now_ms)
        held = self._held.pop(key, None)
        return Ticket(key, home, now_ms, self._writes, held.grant if held is not None else None)

    def admit(
        self, ticket: Ticket, grant: Grant, state: MesiState, now_ms: int
    ) -> tuple[MesiState, Held] | None:
        """The state to install a granted copy in, and its record; None to refuse it."""
        key = ticket.key
        serve_until = ticket.sent_ms + self.serve_ms
        if not state.valid or serve_until <= now_ms:
            return None
        last = self._last_write.get(key)
        if last is not None and last[0] > ticket.seq:
            return None
        if not self.fences.admits(key, grant):
            return None
        current = self._held.get(key)
        if current is not None and current.grant >= grant:
            return None
        if state.exclusive and self.fences.must_share(key, grant):
            state = MesiState.S
        return state, Held(grant, serve_until, ticket.home)

    # -- the copies ----------------------------------------------------------------------

    def hold(self, key: str, held: Held) -> None:
        self._held[key] = held

    def forget(self, key: str) -> Held | None:
        return self._held.pop(key, None)

    def evict(self, key: str, now_ms: int) -> Held | None:
        """Forget a copy evicted for room, and fence grants older than it: the node tells
        the home it holds nothing, the home drops its record, and a late reply of an older
        grant installed afterwards would be a copy the home does not know, so no later
        write would invalidate it."""
        held = self._held.pop(key, None)
        if held is not None:
            self.fences.invalidated(key, held.grant, now_ms)
        return held

    def held(self, key: str) -> Held | None:
        return self._held.get(key)

    def valid(self, key: str, now_ms: int) -> bool:
        """Whether the node may serve its copy of `key` now."""
        held = self._held.get(key)
        return held is not None and held.serve_until > now_ms

    def keys(self) -> list[str]:
        return sorted(self._held)

    def __len__(self) -> int:
        return len(self._held)

    # -- peers' requests ---------------------------------------------------------------

    def invalidate(self, key: str, txn: Grant, now_ms: int) -> bool:
        """Write `txn` at the home invalidates copies granted before it; True when the
        held copy must go. A copy granted after it is newer (the write finished without
        this late message) and stays."""
        self.fences.invalidated(key, txn, now_ms)
        held = self._held.get(key)
        if held is None or held.grant >= txn:
            return False
        del self._held[key]
        return True

    def supply(self, key: str, txn: Grant, downgrade: bool, now_ms: int) -> bool:
        """A peer's read through the home; True when the held copy may be supplied.

        The downgrade fence is set even when there is no copy: this node's exclusive grant
        may still be on its way, and must arrive as S.
        """
        if downgrade:
            self.fences.downgraded(key, txn, now_ms)
        return self.valid(key, now_ms)

    # -- leases --------------------------------------------------------------------------

    def renewals(self, now_ms: int, within_ms: int) -> dict[str, list[Renewal]]:
        """Per home, the live copies whose serve time ends within `within_ms`."""
        batches: dict[str, list[Renewal]] = {}
        for key, held in self._held.items():
            if now_ms < held.serve_until <= now_ms + within_ms:
                batches.setdefault(held.home, []).append((key, held.grant))
        return batches

    def renewed(self, key: str, grant: Grant, ok: bool, sent_ms: int, now_ms: int) -> bool:
        """Apply one renewal answer; True when the copy must be dropped (refused, or its
        serve time ended before the answer came).

        An answer about a grant no longer held (replaced, invalidated, evicted meanwhile)
        changes nothing. A copy that ran out is never brought back: while it was out the
        node may have told a peer's read through the home that it had no copy (so the home
        recorded it as shared, or as gone), and a revived M or E copy would contradict that.
        """
        held = self._held.get(key)
        if held is None or held.grant != grant:
            return False
        if not ok or held.serve_until <= now_ms:
            del self._held[key]
            return True
        serve_until = sent_ms + self.serve_ms
        if serve_until > held.serve_until:
            self._held[key] = replace(held, serve_until=serve_until)
        return False

    def expire(self, now_ms: int) -> list[str]:
        """Forget copies whose serve time is over (returned, for the caller to drop), and
        fences and write marks too old to matter: a request sent before a write that began
        `serve_ms` ago is refused for lateness anyway."""
        gone = [k for k, h in self._held.items() if h.serve_until <= now_ms]
        for key in gone:
            del self._held[key]
        self.fences.prune(now_ms)
        old = [k for k, (_, began) in self._last_write.items() if began + self.serve_ms <= now_ms]
        for key in old:
            del self._last_write[key]
        return gone
