"""A heartbeat failure detector: which configured nodes are live right now.

The shell feeds it facts and a clock; it returns what changed. It never reads a clock,
sends anything or sleeps, so every timing rule below is testable to the millisecond.

States of a peer (the local node is always alive and never tracked):

    alive --(silent >= suspect_after_ms, or report_unreachable)--> suspect
    suspect --(silent >= dead_after_ms)--> dead        alive --(same)--> dead
    suspect | dead --(heartbeat)--> alive

`silent` is `now_ms - last_heard_ms`, measured on the core's own monotonic clock (the
largest `now_ms` seen, so a late or reordered call can never move time backwards).

Why these choices:

* Suspect members stay live. The ring only changes on alive<->dead, so one late heartbeat
  or one failed forward (the shell calls `report_unreachable`) does not move topics; it
  only marks the member so operators and metrics can see it.
* Peers start alive. Every node boots with the full configured ring, so nodes agree on
  owners from the first request; a peer that never comes up is dropped `dead_after_ms`
  after start, exactly like one that stops. The start is `start_ms`, or else the first
  `now_ms` the core is given (shells use monotonic clocks with arbitrary origins).
* Exact bounds. `tick(now_ms)` declares a peer dead iff it has been silent for at least
  `dead_after_ms`: never earlier, and at the first tick at or after that moment.
  `next_deadline_ms()` tells the shell when that is, so a shell that sleeps until it
  drops a dead peer exactly `dead_after_ms` after its last heartbeat.
* Rejoin on the first heartbeat. A dead member that is heard again is alive at once
  (`joined`), so a restarted node takes its topics back without waiting.
* Incarnations reject stale news. A heartbeat may carry the sender's incarnation (for
  example its boot time in ms); one older than the last seen is from a previous life of
  the node (a delayed packet) and is ignored. A newer one is reported as `restarted`.
* Unknown senders are ignored (and counted): membership is the configured peer list, so
  a misaddressed heartbeat cannot add a node to the ring. The shell adds members it
  learns at run time (`add`, from discovery): they start dead and join on their first
  heartbeat, so a stale registry entry never takes a share of the ring. `forget` drops
  a member that left for good.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from distcluster_worker.membership.errors import require


class MemberState(StrEnum):
    """Where a member stands in the failure detector."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True)
class Changes:
    """What one call changed; every tuple is sorted. `joined`/`left` change the ring."""

    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    suspected: tuple[str, ...] = ()
    recovered: tuple[str, ...] = ()
    restarted: tuple[str, ...] = ()

    @property
    def ring_changed(self) -> bool:
        """True when the live set changed, so the shell must rebuild its ring."""
        return bool(self.joined or self.left)

    def __bool__(self) -> bool:
        return bool(self.joined or self.left or self.suspected or self.recovered or self.restarted)


NO_CHANGES = Changes()


@dataclass
class _Peer:
    state: MemberState
    since_ms: int
    last_heard_ms: int | None = None
    incarnation: int | None = None
    discovered: bool = False  # added at run time (`add`): dead until first heard


class Membership:
    """The live member set of one node, driven by heartbeats and ticks."""

    def __init__(
        self,
        self_id: str,
        peers: Iterable[str],
        *,
        suspect_after_ms: int = 1500,
        dead_after_ms: int = 3000,
        start_ms: int | None = None,
    ) -> None:
        _check_id(self_id)
        if not 0 < suspect_after_ms < dead_after_ms:
            raise ValueError(
                "need 0 < suspect_after_ms < dead_after_ms, got "
                f"{suspect_after_ms} and {dead_after_ms}"
            )
        self._self_id = self_id
        self._suspect_after_ms = suspect_after_ms
        self._dead_after_ms = dead_after_ms
        self._start_ms = start_ms
        self._clock_ms = start_ms
        self._unknown_heartbeats = 0
        self._peers: dict[str, _Peer] = {}
        for peer in peers:
            _check_id(peer)
            if peer != self_id:
                self._peers[peer] = _Peer(MemberState.ALIVE, since_ms=start_ms or 0)

    # -- inputs ------------------------------------------------------------------------

    def heartbeat(self, member: str, now_ms: int, incarnation: int | None = None) -> Changes:
        """`member` was heard from at `now_ms` (any message from it counts)."""
        now = self._advance(now_ms)
        peer = self._peers.get(member)
        if peer is None:
            if member != self._self_id:
                self._unknown_heartbeats += 1
            return NO_CHANGES
        restarted = False
        if incarnation is not None and peer.incarnation is not None:
            if incarnation < peer.incarnation:
                return NO_CHANGES  # From an earlier life of the node: stale news.
            restarted = incarnation > peer.incarnation
        if incarnation is not None:
            peer.incarnation = incarnation
        peer.last_heard_ms = now
        before = peer.state
        if before is not MemberState.ALIVE:
            peer.state, peer.since_ms = MemberState.ALIVE, now
        self.check()
        return Changes(
            joined=(member,) if before is MemberState.DEAD else (),
            recovered=(member,) if before is MemberState.SUSPECT else (),
            restarted=(member,) if restarted else (),
        )

    def add(self, member: str, now_ms: int) -> Changes:
        """Track `member`, learned at run time (discovery): it joins when first heard.

        It starts dead, not alive like the configured peers: a registry can name a node
        that is gone (or was never reachable from here), and it must not take topics or
        keys before it proved it answers. Adding a known member changes nothing.
        """
        _check_id(member)
        now = self._advance(now_ms)
        if member != self._self_id and member not in self._peers:
            self._peers[member] = _Peer(MemberState.DEAD, since_ms=now, discovered=True)
        self.check()
        return NO_CHANGES

    def forget(self, member: str, now_ms: int) -> Changes:
        """Stop tracking `member` (it left the cluster); `left` if it was on the ring."""
        self._advance(now_ms)
        peer = self._peers.pop(member, None)
        self.check()
        if peer is None or peer.state is MemberState.DEAD:
            return NO_CHANGES
        return Changes(left=(member,))

    def report_unreachable(self, member: str, now_ms: int) -> Changes:
        """The shell failed to reach `member`: suspect it now (it stays in the ring)."""
        now = self._advance(now_ms)
        peer = self._peers.get(member)
        if peer is None or peer.state is not MemberState.ALIVE:
            return NO_CHANGES
        peer.state, peer.since_ms = MemberState.SUSPECT, now
        self.check()
        return Changes(suspected=(member,))

    def tick(self, now_ms: int) -> Changes:
        """Advance the clock to `now_ms` and apply every timeout that has passed."""
        now = self._advance(now_ms)
        left: list[str] = []
        suspected: list[str] = []
        for member in sorted(self._peers):
            peer = self._peers[member]
            silent_ms = now - self._heard_or_start(peer)
            if silent_ms >= self._dead_after_ms and peer.state is not MemberState.DEAD:
                peer.state, peer.since_ms = MemberState.DEAD, now
                left.append(member)
            elif silent_ms >= self._suspect_after_ms and peer.state is MemberState.ALIVE:
                peer.state, peer.since_ms = MemberState.SUSPECT, now
                suspected.append(member)
        self.check()
        self._check_settled()
        return Changes(left=tuple(left), suspected=tuple(suspected))

    # -- outputs -----------------------------------------------------------------------

    @property
    def self_id(self) -> str:
        return self._self_id

    @property
    def clock_ms(self) -> int | None:
        """The largest time seen so far (None before the first call with a time)."""
        return self._clock_ms

    @property
    def members(self) -> tuple[str, ...]:
        """Every configured member, self included, sorted."""
        return tuple(sorted([self._self_id, *self._peers]))

    def live(self) -> tuple[str, ...]:
        """The members that belong on the ring (alive or suspect), self included, sorted."""
        live = [m for m, p in self._peers.items() if p.state is not MemberState.DEAD]
        return tuple(sorted([self._self_id, *live]))

    def unheard(self) -> tuple[str, ...]:
        """Members added at run time (`add`) and never heard yet, sorted: nodes that may be
        starting right now, not yet on this node's ring though perhaps serving already."""
        return tuple(
            sorted(m for m, p in self._peers.items() if p.discovered and p.last_heard_ms is None)
        )

    def state(self, member: str) -> MemberState:
        """The state of `member`; KeyError if it is not configured."""
        if member == self._self_id:
            return MemberState.ALIVE
        return self._peers[member].state

    def next_deadline_ms(self) -> int | None:
        """The earliest time at which `tick` would change a state (None if none would)."""
        deadlines = [self._deadline(peer) for peer in self._peers.values()]
        pending = [d for d in deadlines if d is not None]
        return min(pending) if pending else None

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view for `GET /cluster`."""
        members: dict[str, dict[str, Any]] = {
            self._self_id: {
                "state": MemberState.ALIVE.value,
                "self": True,
                "last_heard_ms": self._clock_ms,
                "since_ms": self._start_ms,
                "incarnation": None,
            }
        }
        for member in sorted(self._peers):
            peer = self._peers[member]
            members[member] = {
                "state": peer.state.value,
                "self": False,
                "last_heard_ms": peer.last_heard_ms,
                "since_ms": peer.since_ms,
                "incarnation": peer.incarnation,
            }
        return {
            "self_id": self._self_id,
            "clock_ms": self._clock_ms,
            "suspect_after_ms": self._suspect_after_ms,
            "dead_after_ms": self._dead_after_ms,
            "live": list(self.live()),
            "unknown_heartbeats": self._unknown_heartbeats,
            "members": dict(sorted(members.items())),
        }

    def check(self) -> None:
        """Raise MembershipInvariantError if a rule that always holds is broken."""
        require(self._self_id not in self._peers, "self is tracked as a peer")
        if self._clock_ms is None:
            return
        for member, peer in self._peers.items():
            heard = self._heard_or_start(peer)
            require(heard <= self._clock_ms, f"{member} was heard in the future")
            require(peer.since_ms <= self._clock_ms, f"{member} changed state in the future")
            if peer.state is MemberState.DEAD and not (
                peer.discovered and peer.last_heard_ms is None
            ):
                silent_ms = self._clock_ms - heard
                require(silent_ms >= self._dead_after_ms, f"{member} is dead too early")

    # -- internals ---------------------------------------------------------------------

    def _advance(self, now_ms: int) -> int:
        if isinstance(now_ms, bool) or not isinstance(now_ms, int):
            raise TypeError(f"now_ms must be an int, got {now_ms!r}")
        if self._start_ms is None:
            self._start_ms = now_ms
            for peer in self._peers.values():
                peer.since_ms = now_ms
        if self._clock_ms is None or now_ms > self._clock_ms:
            self._clock_ms = now_ms
        return self._clock_ms

    def _heard_or_start(self, peer: _Peer) -> int:
        if peer.last_heard_ms is not None:
            return peer.last_heard_ms
        require(self._start_ms is not None, "a timeout was evaluated before any time")
        return self._start_ms or 0

    def _deadline(self, peer: _Peer) -> int | None:
        if peer.state is MemberState.DEAD or self._start_ms is None:
            return None
        heard = self._heard_or_start(peer)
        if peer.state is MemberState.ALIVE:
            return heard + self._suspect_after_ms
        return heard + self._dead_after_ms

    def _check_settled(self) -> None:
        # Right after a tick no timeout may be overdue: the tick applied all of them.
        now = self._clock_ms
        require(now is not None, "a tick left the clock unset")
        for member, peer in self._peers.items():
            deadline = self._deadline(peer)
            require(deadline is None or deadline > (now or 0), f"{member} has an overdue timeout")


def _check_id(member: str) -> None:
    if not isinstance(member, str) or not member:
        raise ValueError(f"a member id must be a non-empty string, got {member!r}")
