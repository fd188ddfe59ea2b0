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
copy the key's real home does not know. Time is the event loop's monotonic clock in ms
(``mono``); leases in the directory are in those ms.

Grace: a home that starts, gains keys, or finds that its own loop stalled for
``stall_ms`` (a SIGSTOP, a long GC: peers may have declared it dead and given its keys to
another home meanwhile) grants nothing and completes no write for ``grace_ms``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.exceptions import RedisError

from distcluster_worker.cache_role.store import CacheStore
from distcluster_worker.coherence import Directory, Plan, Queued, UnknownTransactionError
from distcluster_worker.shell.errors import ApiError

T = TypeVar("T")
Send = Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, Any]]]


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
    ) -> None:
        self.node_id = node_id
        self.epoch = epoch
        self.times = times
        self.mono = mono
        self.store = store
        self.send = send
        self.owns = owns
        # A restarted home cannot know what copies it granted before: grace.
        now = mono()
        self.directory = Directory(
            node_id, lease_ticks=times.lease_ms, grace_until=now + times.grace_ms
        )
        self.counters = HomeCounters()
        self._waiters: dict[int, asyncio.Future[Plan]] = {}
        self._awake_ms = now

    def start_grace(self) -> None:
        """Keys may have moved here from a home whose grants we do not know: grace."""
        d = self.directory
        d.grace_until = max(d.grace_until, self.mono() + self.times.grace_ms)
        self.counters.graces += 1

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
        if not self.owns(key):
            raise ApiError(503, "not_home", f"{self.node_id} is not the home of {key!r}")
        return now

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
            await self._invalidate_all(plan)
            await self._wait_ready(plan)
            version = await _redis(self.store.write(key, value))
            done = self.directory.complete(plan.txn_id, self.mono())
        except BaseException:
            self._abort(plan.txn_id)
            raise
        self._dispatch(done.started)
        return {"version": version, "state": done.state.value, "grant": self.wire(done.grant)}

    def renew(self, node: str, entries: list[tuple[str, int, int]]) -> list[bool]:
        """Renew `node`'s copies `(key, epoch, txn)`; a copy of another epoch or of a key
        this node is no longer home of is refused, so the node drops it."""
        now = self.awake()
        mine = [
            i for i, (key, epoch, _) in enumerate(entries) if epoch == self.epoch and self.owns(key)
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
        """Wait until every other copy acked or ran out of lease (bounded by the leases)."""
        while not self.directory.may_complete(plan.txn_id, self.mono()):
            until = max(plan.wait_until, self.directory.grace_until)
            remaining = until - self.mono()
            await asyncio.sleep(min(max(remaining, 2), 100) / 1000)

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
