"""The home side: runs the `Directory` for the keys this node is home of.

One transaction per key at a time (the directory queues the rest; a queued request's
handler waits on a future until the transaction ahead of it finishes and the directory
hands out its plan). The handler that started a transaction carries it out to the end:

* read: ``bus_read`` the supplier the plan names; a 404 means the supplier has no valid
  copy (its downgrade fence is set, so memory is served); no answer at all is reported
  to the directory (``supplier_failed``: an exclusive owner's downgrade is unconfirmed, so
  the reader gets no copy); then read Redis, ``complete`` and return the grant;
* write/delete: ``invalidate`` every other copy in parallel, wait until each acked or
  its lease ran out (``may_complete``), write Redis (a new version), ``complete``;
* renew: one batch per node, ``renew_all`` on the keys this node is still home of.

Any failure aborts the transaction, so the key is never left locked. A request for a key
this node is not home of (by its own view of the ring) is refused: granting it would make a
copy the key's real home does not know. The same holds for a transaction that was already
running when the key moved on (the ring changed, or this node began to leave): a write
that has not written Redis yet is aborted (503 ``not_home``), and a read or a write that
finishes anyway grants no copy (state ``I``). Time is the event loop's monotonic clock in
ms (``mono``); leases in the directory are in those ms.

Grace: a home that starts, gains keys, or finds that its own loop stalled for
``stall_ms`` (a SIGSTOP, a long GC: peers may have declared it dead and given its keys to
another home meanwhile) grants nothing and completes no write until

* ``grace_ms`` have passed (a lease of the previous home's copies, and two heartbeats),
  and
* every live peer has acknowledged a heartbeat sent since (``acked``), and a lease more
  has passed. A peer answers a heartbeat only after it put this node on its ring, so from
  then on it is home of none of this node's keys and grants nothing for them; what it
  granted before runs out within that lease. Without this, a node that joins while its
  peers hear of it late (a loaded machine, a slow link) would grant copies that the old
  home, still unaware of it, does not invalidate. The peers counted are the ring's and
  those discovered but not heard yet (two nodes that start together, each not yet on the
  other's ring, could both take a key). A peer that never answers leaves the ring when it
  is declared dead, and one never heard when it leaves the registry (``forget_peers``);
  either way the count goes on without it.

Slot leases (`slots.py`): views can differ for long (an asymmetric partition), so the ring
alone could make two nodes act as one key's home. A node therefore acts as a key's home
only while it also holds the key's slot in Redis (``slots.acting``); a transaction checks
that when it starts and again before it grants or completes anything, a renewal only
renews copies of held slots, and the Redis write itself is fenced by the slot's tenure
(``slots.fence``), so a home that lost its slot writes nothing (503 ``not_home``). A slot
just acquired grants no copy and completes no write until ``slots.grants_from``: the
previous holder's copies have run out by then. A ``not_home`` answer names the slot's
holder as far as this node knows (``holder``), so the requester can ask it instead.

Leaving (``leave``, when a graceful stop begins): the node grants, renews and completes
nothing more, so that the homes that take its keys over, whose grace starts when they see
it leave the registry, outlast every copy it granted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from redis.exceptions import RedisError

from distcluster_worker.cache_role.store import CacheStore
from distcluster_worker.coherence import (
    Directory,
    MesiState,
    Plan,
    Queued,
    UnknownTransactionError,
)
from distcluster_worker.shell.errors import ApiError

T = TypeVar("T")
Send = Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, Any]]]
# The directory's grace end while a peer has not acknowledged the change yet.
UNTIL_ACKED = 1 << 62


class SlotGate(Protocol):
    """What the home asks the slot leases about a key (see the module docstring)."""

    def acting(self, key: str) -> bool: ...

    def grants_from(self, key: str) -> int: ...

    def holder(self, key: str) -> str | None: ...

    def fence(self, key: str) -> tuple[str, str] | None: ...


@dataclass(slots=True)
class HomeCounters:
    invalidations_sent: int = 0
    bus_reads: int = 0
    reads: int = 0
    memory_reads: int = 0  # reads served from Redis (the rest came from a peer's copy)
    writes: int = 0
    renewals: int = 0
    renewals_refused: int = 0
    graces: int = 0


@dataclass(frozen=True, slots=True)
class HomeTimes:
    """The home's durations in ms (see the module docstring)."""

    lease_ms: int
    grace_ms: int
    stall_ms: int
    txn_timeout_ms: int


class Home:
    def __init__(
        self,
        node_id: str,
        *,
        epoch: int,
        times: HomeTimes,
        mono: Callable[[], int],
        store: CacheStore,
        send: Send,
        owns: Callable[[str], bool],
        slots: SlotGate,
        peers: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        """`owns`: whether this node's ring names it the key's home; `slots`: whether it
        holds the key's slot; `peers`: the other members a grace period waits for (see the
        module docstring)."""
        self.node_id = node_id
        self.epoch = epoch
        self.times = times
        self.mono = mono
        self.store = store
        self.send = send
        self.owns = owns
        self.slots = slots
        self.peers = peers
        self.leaving = False
        now = mono()
        self.directory = Directory(node_id, lease_ticks=times.lease_ms, grace_until=UNTIL_ACKED)
        self.counters = HomeCounters()
        self._waiters: dict[int, asyncio.Future[Plan]] = {}
        self._awake_ms = now
        self._grace_floor = now
        self._unacked: set[str] = set()
        self._acks_from = now
        # A restarted home cannot know what copies it granted before: grace.
        self._begin_grace(now)

    def start_grace(self) -> None:
        """Keys may have moved here from a home whose grants we do not know: grace, until
        `grace_ms` from now and until every live peer acknowledged the change."""
        self.counters.graces += 1
        self._begin_grace(self.mono())

    def _begin_grace(self, now: int) -> None:
        self._grace_floor = max(self._grace_floor, now + self.times.grace_ms)
        self._unacked = set(self.peers()) - {self.node_id}
        self._acks_from = now
        self._settle()

    def acked(self, peer: str, sent_ms: int) -> None:
        """`peer` answered a heartbeat sent at `sent_ms`: this node is on its ring now."""
        if peer in self._unacked and sent_ms >= self._acks_from:
            self._unacked.discard(peer)
            self._acked_all()

    def _acked_all(self) -> None:
        if not self._unacked:
            # What the peers granted before they heard of us runs out within a lease.
            self._grace_floor = max(self._grace_floor, self.mono() + self.times.lease_ms)
        self._settle()

    def forget_peers(self, peers: Iterable[str]) -> None:
        """`peers` left the cluster: a grace period no longer waits for them."""
        if self._unacked & set(peers):
            self._unacked -= set(peers)
            self._acked_all()

    def unacked(self) -> list[str]:
        """The peers a grace period still waits for."""
        return sorted(self._unacked)

    def _settle(self) -> None:
        self.directory.grace_until = UNTIL_ACKED if self._unacked else self._grace_floor

    def leave(self) -> None:
        """This node is leaving the cluster: grant, renew and complete nothing more."""
        self.leaving = True

    def awake(self) -> int:
        """Note that the loop runs now; start a grace period if it had stalled."""
        now = self.mono()
        if now - self._awake_ms >= self.times.stall_ms:
            self.start_grace()
        self._awake_ms = now
        return now

    def wire(self, txn_id: int) -> list[int]:
        return [self.epoch, txn_id]

    def _check_home(self, key: str) -> int:
        now = self.awake()
        self._require_home(key)
        return now

    def _still_home(self, key: str) -> bool:
        return not self.leaving and self.owns(key) and self.slots.acting(key)

    def _may_grant(self, key: str) -> bool:
        """Home of the key, and past the grace of a slot just acquired."""
        return self._still_home(key) and self.mono() >= self.slots.grants_from(key)

    def _require_home(self, key: str) -> None:
        if self.leaving:
            raise ApiError(503, "not_home", f"{self.node_id} is leaving the cluster")
        if not self.owns(key):
            raise ApiError(503, "not_home", f"{self.node_id} is not the home of {key!r}")
        if not self.slots.acting(key):
            holder = self.slots.holder(key)
            raise ApiError(
                503,
                "not_home",
                f"{self.node_id} does not hold the slot of {key!r} (holder: {holder})",
                holder=holder,
            )

    # -- transactions -------------------------------------------------------------------

    async def read(self, key: str, node: str) -> dict[str, Any]:
        self.counters.reads += 1
        now = self._check_home(key)
        plan = await self._begin(self.directory.request_read(key, node, now))
        try:
            value, version = await self._fetch(plan)
        except BaseException:
            self._abort(plan.txn_id)
            raise
        if value is None:
            self._abort(plan.txn_id)
            return {"found": False}
        if not self._may_grant(key):
            # The key moved on while the read ran (or its slot was just acquired): the
            # value, but no copy to keep.
            self._abort(plan.txn_id)
            return self._uncached(plan, found=True, value=value, version=version)
        done = self.directory.complete(plan.txn_id, self.mono())
        self._dispatch(done.started)
        return {
            "found": True,
            "value": value,
            "version": version,
            "state": done.state.value,
            "grant": self.wire(done.grant),
        }

    async def write(
        self, key: str, node: str, value: str | None, dropped: tuple[int, int] | None = None
    ) -> dict[str, Any]:
        """`dropped`: the grant of the copy the writer dropped when it began (see
        `Directory.request_write`); one of another epoch says nothing about this one's."""
        self.counters.writes += 1
        now = self._check_home(key)
        mine = dropped[1] if dropped is not None and dropped[0] == self.epoch else None
        d = self.directory
        request = d.request_delete if value is None else d.request_write
        plan = await self._begin(request(key, node, now, dropped=mine))
        try:
            self._require_home(key)  # it may have waited in the queue while the key moved
            await self._invalidate_all(plan)
            await self._wait_ready(plan)
            version = await self._write_fenced(key, value)
        except BaseException:
            self._abort(plan.txn_id)
            raise
        if not self._may_grant(key) or not self.directory.may_complete(plan.txn_id, self.mono()):
            # Written, but the key moved on (or a grace began) meanwhile: no copy to keep.
            self._abort(plan.txn_id)
            return self._uncached(plan, version=version)
        done = self.directory.complete(plan.txn_id, self.mono())
        self._dispatch(done.started)
        return {"version": version, "state": done.state.value, "grant": self.wire(done.grant)}

    async def _write_fenced(self, key: str, value: str | None) -> int:
        """Write Redis if the key's slot still holds this home's tenure; 503 otherwise."""
        self._require_home(key)
        fence = self.slots.fence(key)
        version = await _redis(self.store.write(key, value, fence)) if fence else None
        if version is None:
            holder = self.slots.holder(key)
            raise ApiError(
                503, "not_home", f"{self.node_id} lost the slot of {key!r}", holder=holder
            )
        return version

    def _uncached(self, plan: Plan, **answer: Any) -> dict[str, Any]:
        """The answer to a transaction that ends without a copy for its requester."""
        return {**answer, "state": MesiState.I.value, "grant": self.wire(plan.txn_id)}

    def renew(self, node: str, entries: list[tuple[str, int, int]]) -> list[bool]:
        """Renew `node`'s copies `(key, epoch, txn)`; a copy of another epoch or of a key
        this node is no longer home of is refused, so the node drops it."""
        now = self.awake()
        mine = [
            i
            for i, (key, epoch, _) in enumerate(entries)
            if epoch == self.epoch and self._may_grant(key)
        ]
        leases = self.directory.renew_all(node, [(entries[i][0], entries[i][2]) for i in mine], now)
        ok = [False] * len(entries)
        for i, lease in zip(mine, leases, strict=True):
            ok[i] = lease is not None
        self.counters.renewals += len(entries)
        self.counters.renewals_refused += ok.count(False)
        return ok

    def evicted(self, key: str, node: str, grant: tuple[int, int]) -> None:
        if grant[0] == self.epoch:
            self.directory.evicted(key, node, grant[1], self.mono())

    # -- steps ----------------------------------------------------------------------------

    async def _begin(self, request: Plan | Queued) -> Plan:
        if isinstance(request, Plan):
            return request
        future: asyncio.Future[Plan] = asyncio.get_running_loop().create_future()
        self._waiters[request.txn_id] = future
        try:
            await asyncio.wait({future}, timeout=self.times.txn_timeout_ms / 1000)
        finally:
            self._waiters.pop(request.txn_id, None)
        if future.done():
            return future.result()
        self._abort(request.txn_id)
        raise ApiError(503, "busy", f"key {request.key!r} is busy; try again")

    async def _fetch(self, plan: Plan) -> tuple[str | None, int]:
        if plan.supplier is not None:
            self.counters.bus_reads += 1
            body = {
                "key": plan.key,
                "txn": self.wire(plan.txn_id),
                "downgrade": plan.supplier in plan.downgrade,
                "write_back": plan.write_back == plan.supplier,
            }
            status, reply = await self.send(plan.supplier, "/cache/bus_read", body)
            if status == 200 and isinstance(reply, dict) and isinstance(reply.get("value"), str):
                return reply["value"], int(reply.get("version", 0))
            if status != 404:
                self.directory.supplier_failed(plan.txn_id, self.mono())
        self.counters.memory_reads += 1
        return await _redis(self.store.read(plan.key))

    async def _invalidate_all(self, plan: Plan) -> None:
        body = {"key": plan.key, "txn": self.wire(plan.txn_id)}
        targets = sorted(plan.invalidate)
        self.counters.invalidations_sent += len(targets)
        replies = await asyncio.gather(
            *(self.send(node, "/cache/invalidate", body) for node in targets)
        )
        for node, (status, _) in zip(targets, replies, strict=True):
            if status == 200:
                self.directory.ack_invalidate(plan.txn_id, node, self.mono())

    async def _wait_ready(self, plan: Plan) -> None:
        """Wait until every other copy acked or ran out of lease (bounded by the leases) and
        the grace period is over; 503 if the grace still waits for a peer's acknowledgement
        `txn_timeout_ms + grace_ms` later, or the key moves on meanwhile."""
        give_up = self.mono() + self.times.txn_timeout_ms + self.times.grace_ms
        while not self._ready(plan):
            self._require_home(plan.key)
            now = self.mono()
            if now >= give_up:
                waiting = ", ".join(self.unacked())
                raise ApiError(
                    503, "busy", f"key {plan.key!r}: its home waits for its peers ({waiting})"
                )
            slot_grace = self.slots.grants_from(plan.key)
            until = min(max(plan.wait_until, self.directory.grace_until, slot_grace), give_up)
            await asyncio.sleep(min(max(until - now, 2), 100) / 1000)

    def _ready(self, plan: Plan) -> bool:
        now = self.mono()
        return self.directory.may_complete(plan.txn_id, now) and now >= self.slots.grants_from(
            plan.key
        )

    def _abort(self, txn_id: int) -> None:
        try:
            self._dispatch(self.directory.abort(txn_id, self.mono()))
        except UnknownTransactionError:
            pass

    def _dispatch(self, plan: Plan | None) -> None:
        """Hand a plan started by the directory to the handler waiting for it."""
        if plan is None:
            return
        future = self._waiters.get(plan.txn_id)
        if future is not None and not future.done():
            future.set_result(plan)
        else:
            self._abort(plan.txn_id)


async def _redis(call: Awaitable[T]) -> T:
    try:
        return await call
    except (RedisError, OSError, TimeoutError) as exc:
        raise ApiError(503, "unavailable", f"Redis is unavailable: {type(exc).__name__}") from None
