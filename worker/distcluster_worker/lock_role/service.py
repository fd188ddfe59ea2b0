"""The lock service on the leader: turns client requests into commands and outcomes.

The lock table is applied on every node from the committed log, so an outcome is
delivered to whichever node is waiting for that `request_id`, even if that node lost
leadership after proposing. A client's wait is bounded twice: the table refuses a
waiter whose `wait_ms` has passed (the leader proposes `expire` entries as deadlines
fall due), and the shell gives up after `wait_ms + request_timeout_ms` with a 503 when
no quorum answers, so a request never hangs.

Commands are stamped with the leader's clock (`now_ms`) when proposed; the table keeps
its own time monotonic, so a new leader with a slower clock cannot shorten a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from distcluster_worker.lock_role.driver import RaftDriver
from distcluster_worker.locks.outcomes import Granted, Outcome, Queued
from distcluster_worker.locks.table import LockTable
from distcluster_worker.raft.messages import Entry
from distcluster_worker.shell import jsonio


class QuorumUnavailableError(Exception):
    """No quorum answered within the bound."""


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
        self._watchers: dict[str, list[asyncio.Queue[Outcome]]] = {}
        self._expire_in_flight = False
        self._background: set[asyncio.Task[None]] = set()

    # -- StateMachine --------------------------------------------------------------

    def apply(self, entry: Entry) -> None:
        if entry.kind != "command":
            return
        try:
            command = jsonio.loads(entry.data)
        except ValueError:
            command = {}
        for outcome in self.table.apply(entry.index, command):
            if self._on_outcome is not None:
                self._on_outcome(outcome)
            for queue in self._watchers.get(outcome.request_id, ()):
                queue.put_nowait(outcome)

    def restore(self, data: str) -> None:
        self.table = LockTable.restore(data)

    def snapshot(self) -> str:
        return self.table.snapshot()

    # -- client operations (leader only; NotLeader propagates to the caller) -------

    async def execute(self, command: dict[str, Any], *, wait_ms: int = 0) -> Outcome:
        """Propose `command` and return its final outcome (never `Queued`)."""
        driver = self._require_driver()
        request_id = command["request_id"]
        command = {**command, "now_ms": self._clock_ms()}
        queue: asyncio.Queue[Outcome] = asyncio.Queue()
        self._watchers.setdefault(request_id, []).append(queue)
        queued = False
        try:
            async with asyncio.timeout(wait_ms / 1000 + self._timeout_s):
                await driver.propose(jsonio.dumps(command))
                while True:
                    outcome = await queue.get()
                    if not isinstance(outcome, Queued):
                        return outcome
                    queued = True
        except TimeoutError:
            if queued:
                self._spawn(self._cancel(request_id))
            raise QuorumUnavailableError("no quorum answered in time") from None
        finally:
            self._unwatch(request_id, queue)

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

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _unwatch(self, request_id: str, queue: asyncio.Queue[Outcome]) -> None:
        queues = self._watchers.get(request_id, [])
        if queue in queues:
            queues.remove(queue)
        if not queues:
            self._watchers.pop(request_id, None)


def is_granted(outcome: Outcome) -> bool:
    return isinstance(outcome, Granted)
