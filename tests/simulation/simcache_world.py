"""The world of the cache simulation: time, clocks, Redis as main memory, messages and
the history of client operations.

Time is a global step counter; one step stands for `TICK_MS` of real time. Each node reads
its own clock, `offset + t * TICK_MS * rate / 1000` (integer ms), with a rate within
`MAX_DRIFT_PERMILLE` of 1000: the nodes' margin between serve time and lease (10%) covers
that drift, so a run that breaks a lease through drift is a real finding, not noise.

Redis' side of the slot leases is the in-memory twin of their Lua script
(`coherence.InMemorySlots`) on the simulation's true time.

`Memory` is Redis: one (value, version) per key, written only by the homes (write-through
with a version that grows by one per write, as `store.py`'s Lua script does) and by
version-fenced write-backs. It can be made flaky: a read or write then fails, and a failing
write may or may not have been applied, like a Redis call that times out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

TICK_MS = 10
MAX_DRIFT_PERMILLE = 40


@dataclass(frozen=True)
class Timing:
    """The cache settings of the simulated nodes, in ms (as `CacheSettings` derives them)."""

    lease_ms: int = 400
    rpc_timeout_ms: int = 150
    txn_timeout_ms: int = 500
    heartbeat_ms: int = 50
    dead_after_ms: int = 300  # silence before a node drops a peer from its view
    slot_lease_ms: int = 600
    renew: bool = True  # False: copies are never renewed (what renewal buys, in a test)

    @property
    def slot_round_ms(self) -> int:
        return self.slot_lease_ms // 4

    @property
    def serve_ms(self) -> int:
        return self.lease_ms - max(1, self.lease_ms // 10)

    @property
    def renew_every_ms(self) -> int:
        return max(10, self.lease_ms // 4) if self.renew else 1 << 40

    @property
    def renew_within_ms(self) -> int:
        return self.serve_ms // 2

    @property
    def grace_ms(self) -> int:
        return self.lease_ms + 2 * self.heartbeat_ms

    @property
    def home_call_timeout_ms(self) -> int:
        return self.txn_timeout_ms + 2 * self.lease_ms + self.rpc_timeout_ms


@dataclass(frozen=True)
class Clock:
    """A node's monotonic clock: it survives the node's crashes, like CLOCK_MONOTONIC."""

    offset_ms: int
    rate_permille: int

    def at(self, t: int) -> int:
        return self.offset_ms + t * TICK_MS * self.rate_permille // 1000


class RedisDownError(Exception):
    """Redis did not answer (the home turns it into a 503)."""


class Memory:
    def __init__(self, rng: random.Random, flaky: float) -> None:
        self.rng = rng
        self.flaky = flaky
        self.values: dict[str, tuple[str | None, int]] = {}
        self.writes = 0

    def current(self, key: str) -> tuple[str | None, int]:
        return self.values.get(key, (None, 0))

    def read(self, key: str) -> tuple[str | None, int]:
        if self.rng.random() < self.flaky:
            raise RedisDownError("read failed")
        return self.current(key)

    def write(self, key: str, value: str | None) -> int:
        """Store a new version; may fail before or after applying it."""
        if self.rng.random() < self.flaky:
            raise RedisDownError("write failed before applying")
        version = self.current(key)[1] + 1
        self.values[key] = (value, version)
        self.writes += 1
        if self.rng.random() < self.flaky:
            raise RedisDownError("write applied, answer lost")
        return version

    def write_back(self, key: str, value: str, version: int) -> bool:
        if version <= self.current(key)[1]:
            return False
        self.values[key] = (value, version)
        return True


@dataclass
class Msg:
    """One message on the wire: a request (`kind`) or the reply to call `call`."""

    src: str
    dst: str
    kind: str
    call: int
    body: dict[str, Any]


@dataclass
class Op:
    """A client operation on one key, as the checker sees it. `ret` is None while it runs
    and stays None for a write whose outcome is unknown (failed or cut short)."""

    op_id: int
    node: str
    key: str
    kind: str  # "read" | "write" | "delete"
    call: int
    value_in: str | None = None
    ret: int | None = None
    value_out: str | None = None
    done: bool = False
    failed: bool = False


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)

    def begin(self, node: str, key: str, kind: str, t: int, value: str | None = None) -> Op:
        op = Op(len(self.ops), node, key, kind, t, value_in=value)
        self.ops.append(op)
        return op

    @staticmethod
    def finish(op: Op, t: int, value_out: str | None = None) -> None:
        op.ret, op.value_out, op.done = t, value_out, True

    @staticmethod
    def fail(op: Op) -> None:
        """No answer the client can trust: a read constrains nothing; a write may or may
        not have happened."""
        op.failed = True

    def completed(self) -> list[Op]:
        """What the checker gets: answered ops, plus writes of unknown outcome."""
        return [op for op in self.ops if op.done or (op.kind != "read" and op.failed)]
