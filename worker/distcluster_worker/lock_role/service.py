"""The lock service on the leader: turns client requests into commands and outcomes.

The lock table is applied on every node from the committed log, so an outcome is
delivered to whichever node is waiting for that `request_id`, even if that node lost
leadership after proposing. A client's wait is bounded twice: the table refuses a
waiter whose `wait_ms` has passed (the leader proposes `expire` entries as deadlines
fall due), and the shell gives up after `wait_ms + request_timeout_ms` with a 503 when
no quorum answers, so a request never hangs.

Commands are stamped with the leader's clock (`now_ms`) when proposed; the table keeps
its own time monotonic, so a new leader with a slower clock cannot shorten a lease.

Each waiting request is a `_Waiter`: a future and a deadline on the loop's clock. One
sweeper task fails the overdue ones every `SWEEP_S`, instead of a timer per request
(`asyncio.timeout` cost more than the rest of the service's work per request), so the
bound is kept within `SWEEP_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distcluster_worker.lock_role.driver import RaftDriver
from distcluster_worker.locks.outcomes import Granted, Outcome, Queued
from distcluster_worker.locks.table import LockTable
from distcluster_worker.raft.messages import Entry
from distcluster_worker.shell import jsonio

SWEEP_S = 0.05
"""How often overdue requests are failed: the precision of the request bound."""


class QuorumUnavailableError(Exception):
    """No quorum answered within the bound."""


@dataclass(slots=True)
class _Waiter:
    """One client request waiting for its final outcome."""

    future: asyncio.Future[Outcome]
    deadline: float  # on the event loop's clock
    queued: bool = False

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class LockService:
    """The state machine the driver applies, plus the client-facing operations."""

    def __init__(
        self,
        *,
        clock_ms: Callable[[], int],
        request_timeout_ms: int,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        dedup_capacity: int = 20_000,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.table = LockTable(dedup_capacity=dedup_capacity)
        self.driver: RaftDriver | None = None
        self._clock_ms = clock_ms
        self._timeout_s = request_timeout_ms / 1000
        self._log = log
        self._dedup_capacity = dedup_capacity
        self._on_outcome = on_outcome
        self._watchers: dict[str, list[_Waiter]] = {}
        self._proposed: dict[str, dict[str, Any]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._expire_in_flight = False
        self._background: set[asyncio.Task[None]] = set()

    # -- StateMachine --------------------------------------------------------------

    def apply(self, entry: Entry) -> None:
        if entry.kind != "command":
            return
        # The leader applies the commands it proposed itself: it still has them as dicts.
        command = self._proposed.pop(entry.data, None)
        if command is None:
            try:
                command = jsonio.loads(entry.data)
            except ValueError:
                command = {}
        for outcome in self.table.apply(entry.index, command):
            if self._on_outcome is not None:
                self._on_outcome(outcome)
            for waiter in self._watchers.get(outcome.request_id, ()):
                if isinstance(outcome, Queued):
                    waiter.queued = True
                elif not waiter.future.done():
                    waiter.future.set_result(outcome)

    def restore(self, data: str) -> None:
        self.table = LockTable.restore(data)

    def snapshot(self) -> str:
        return self.table.snapshot()

    # -- client operations (leader only; NotLeader propagates to the caller) -------

    async def execute(self, command: dict[str, Any], *, wait_ms: int = 0) -> Outcome:
        """Propose `command` and return its final outcome (never `Queued`).

        NotLeader when this node cannot propose; QuorumUnavailableError once
        `wait_ms + request_timeout_ms` passed without an outcome.
        """
        driver = self._require_driver()
        request_id = command["request_id"]
        command = {**command, "now_ms": self._clock_ms()}
        waiter = self._watch(request_id, wait_ms / 1000 + self._timeout_s)
        data = jsonio.dumps(command)
        self._proposed[data] = command
        try:
            driver.submit(data, waiter.fail)
            return await waiter.future
        except TimeoutError:
            if waiter.queued:
                self._spawn(self._cancel(request_id))
            raise QuorumUnavailableError("no quorum answered in time") from None
        finally:
            self._proposed.pop(data, None)
            self._unwatch(request_id, waiter)
            if waiter.future.done() and not waiter.future.cancelled():
                waiter.future.exception()  # retrieved, even when this task was cancelled

    async def read(self, resource: str) -> dict[str, Any]:
        """A linearizable view of one resource (ReadIndex, then wait to apply)."""
        driver = self._require_driver()
        try:
            async with asyncio.timeout(self._timeout_s):
                index = await driver.read_index()
                await driver.wait_applied(index)
        except TimeoutError:
            raise QuorumUnavailableError("no quorum confirmed the read in time") from None
        view = self.table.view(resource)
        view["read_index"] = index
        return view

    def on_tick(self) -> None:
        """On the leader, propose an `expire` entry once a lease or wait deadline passed."""
        driver = self.driver
        if driver is None or driver.node.state != "leader" or self._expire_in_flight:
            return
        deadline = self.table.next_deadline_ms()
        now_ms = self._clock_ms()
        if deadline is not None and deadline <= now_ms:
            self._expire_in_flight = True
            self._spawn(self._propose_expire(now_ms))

    # -- helpers ---------------------------------------------------------------------

    def _require_driver(self) -> RaftDriver:
        if self.driver is None:
            raise QuorumUnavailableError("the Raft driver is not running")
        return self.driver

    async def _propose_expire(self, now_ms: int) -> None:
        driver = self._require_driver()
        try:
            async with asyncio.timeout(self._timeout_s):
                index = await driver.propose(json.dumps({"op": "expire", "now_ms": now_ms}))
                await driver.wait_applied(index)
        except Exception as exc:  # noqa: BLE001 - the next tick proposes again
            self._log.debug("expire proposal did not commit", extra={"error": repr(exc)})
        finally:
            self._expire_in_flight = False

    async def _cancel(self, request_id: str) -> None:
        driver = self._require_driver()
        command = {"op": "cancel", "request_id": request_id, "now_ms": self._clock_ms()}
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout_s):
                await driver.propose(json.dumps(command))

    def _watch(self, request_id: str, within_s: float) -> _Waiter:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), loop.time() + within_s)
        self._watchers.setdefault(request_id, []).append(waiter)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep(), name="lock-request-deadlines")
        return waiter

    async def _sweep(self) -> None:
        """Fail overdue waiters every SWEEP_S; ends when none is left (restarted on demand)."""
        loop = asyncio.get_running_loop()
        while self._watchers:
            await asyncio.sleep(SWEEP_S)
            now = loop.time()
            for waiters in list(self._watchers.values()):
                for waiter in waiters:
                    if waiter.deadline <= now:
                        waiter.fail(TimeoutError())

    async def stop(self) -> None:
        """Cancel the service's own tasks (the node is stopping)."""
        tasks = [*self._background, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _unwatch(self, request_id: str, waiter: _Waiter) -> None:
        waiters = self._watchers.get(request_id, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._watchers.pop(request_id, None)


def is_granted(outcome: Outcome) -> bool:
    return isinstance(outcome, Granted)
