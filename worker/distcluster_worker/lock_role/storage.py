"""Stable storage for one Raft node: its hard state, log and snapshot.

Raft's safety rests on a node never forgetting a vote or an acknowledged entry, so the
driver writes each `Ready` here, in one Redis transaction, before it sends a single
message. Every key belongs to this node alone (`{prefix}:{cluster}:raft:{node_id}:*`),
so nodes sharing one Redis never touch each other's state.

The log is a Redis list whose first element has index `log_start`; appends are RPUSH,
a conflicting suffix is cut with LTRIM, and compaction trims the head. The storage keeps
the bounds in memory (this node is the only writer) so it never has to read them back.

A write is one MULTI/EXEC, except the most common one: entries appended at the end, with
at most a hard state whose term and vote did not change (only its commit index, which
need not be durable at all). That goes as a plain pipeline, one round trip without the
transaction's extra replies (a quarter less CPU per write): Redis applies a pipeline in
order, so a crash can only lose its tail, which leaves either the entries without the
newer commit index or nothing, both states a restarted node recovers from.

Writes go on a connection of their own, taken from the client's settings but outside its
pool, packed and read back directly (`write_commands` builds them, a pure function):
redis-py's `Pipeline` spent about as much CPU per write again on its own machinery, and
every Raft batch is one write on every node. The driver never has two writes in flight,
so one connection is enough. A write that fails closes the connection and is never
retried here (an RPUSH retried after it was applied would store its entries twice); the
driver writes the same entries again, and since `LogPlan` then sees them as a rewrite of
stored indexes, it cuts the list first.

`InMemoryRaftStorage` is the twin used by tests that need no Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from distcluster_worker.raft.messages import (
    Entry,
    HardState,
    Snapshot,
    entry_from_wire,
    entry_to_wire,
    snapshot_from_wire,
    snapshot_to_wire,
)
from distcluster_worker.raft.node import Restored
from distcluster_worker.shell import jsonio
from distcluster_worker.shell.redis_conns import unbounded_connection_settings


class RaftStorage(Protocol):
    async def load(self) -> Restored: ...

    async def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        kept_after_snapshot: Sequence[Entry] = (),
    ) -> None: ...

    async def compact(self, snapshot: Snapshot) -> None: ...


@dataclass
class LogPlan:
    """Where the stored log stands, and the list operations that move it forward.

    Pure bookkeeping, so the truncation arithmetic is tested without Redis.
    """

    start: int = 1  # index of the list's first element
    length: int = 0

    @property
    def last(self) -> int:
        return self.start + self.length - 1

    def reset(self, start: int, entries: Sequence[Entry]) -> list[tuple[Any, ...]]:
        self.start, self.length = start, len(entries)
        ops: list[tuple[Any, ...]] = [("delete",), ("set_start", start)]
        if entries:
            ops.append(("rpush", [_dump_entry(e) for e in entries]))
        return ops

    def append(self, entries: Sequence[Entry]) -> list[tuple[Any, ...]]:
        """Drop stored entries at or after `entries[0].index`, then append `entries`."""
        if not entries:
            return []
        first = entries[0].index
        if first > self.last + 1:
            raise ValueError(f"gap in the log: stored up to {self.last}, got {first}")
        keep = first - self.start
        if keep <= 0:
            return self.reset(first, entries)
        ops: list[tuple[Any, ...]] = []
        if keep < self.length:
            ops.append(("ltrim", 0, keep - 1))
        self.length = keep + len(entries)
        ops.append(("rpush", [_dump_entry(e) for e in entries]))
        return ops

    def trim_head(self, through: int) -> list[tuple[Any, ...]]:
        """Forget entries with index <= `through` (they are in the snapshot)."""
        drop = through - self.start + 1
        if drop <= 0:
            return []
        if drop >= self.length:
            return self.reset(through + 1, [])
        self.start, self.length = through + 1, self.length - drop
        return [("ltrim", drop, -1), ("set_start", self.start)]


def _dump_entry(entry: Entry) -> bytes:
    return jsonio.dumps_bytes(entry_to_wire(entry))


def _dump_hard_state(hs: HardState) -> str:
    return jsonio.dumps({"term": hs.term, "voted_for": hs.voted_for, "commit": hs.commit})


def _load_hard_state(raw: str | bytes | None) -> HardState:
    if raw is None:
        return HardState()
    data = jsonio.loads(raw)
    return HardState(term=data["term"], voted_for=data["voted_for"], commit=data["commit"])


class RedisRaftStorage:
    """Raft storage in Redis under one node's keys; one round trip per save."""

    def __init__(self, redis: aioredis.Redis, key_base: str) -> None:
        self._redis = redis
        self._keys = {
            name: f"{key_base}:{name}" for name in ("hard_state", "log", "log_start", "snapshot")
        }
        self._plan = LogPlan()
        self._stored_vote: tuple[int, str | None] = (0, None)
        pool = redis.connection_pool
        # One bound for a whole write instead of redis-py's per call (see `redis_conns`).
        kwargs, self._timeout_s = unbounded_connection_settings(pool)
        self._conn: AbstractConnection = pool.connection_class(**kwargs)

    async def load(self) -> Restored:
        keys = self._keys
        pipe = self._redis.pipeline(transaction=True)
        pipe.get(keys["hard_state"])
        pipe.get(keys["snapshot"])
        pipe.get(keys["log_start"])
        pipe.lrange(keys["log"], 0, -1)
        hs_raw, snap_raw, start_raw, log_raw = await pipe.execute()
        snapshot = snapshot_from_wire(jsonio.loads(snap_raw)) if snap_raw else None
        entries = [entry_from_wire(jsonio.loads(item)) for item in log_raw]
        default_start = snapshot.last_index + 1 if snapshot else 1
        self._plan = LogPlan(int(start_raw) if start_raw else default_start, len(entries))
        hard_state = _load_hard_state(hs_raw)
        self._stored_vote = (hard_state.term, hard_state.voted_for)
        return Restored(hard_state=hard_state, snapshot=snapshot, entries=entries)

    async def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        kept_after_snapshot: Sequence[Entry] = (),
    ) -> None:
        ops: list[tuple[Any, ...]] = []
        if snapshot is not None:
            ops.append(("snapshot", snapshot))
            ops += self._plan.reset(snapshot.last_index + 1, kept_after_snapshot)
        ops += self._plan.append(entries)
        atomic = any(op[0] != "rpush" for op in ops)
        vote = self._stored_vote
        if hard_state is not None:
            ops.append(("hard_state", hard_state))
            vote = (hard_state.term, hard_state.voted_for)
            atomic = atomic or vote != self._stored_vote
        await self._execute(ops, atomic=atomic)
        self._stored_vote = vote  # only once it is stored: a failed write is retried whole

    async def compact(self, snapshot: Snapshot) -> None:
        await self._execute([("snapshot", snapshot)] + self._plan.trim_head(snapshot.last_index))

    async def close(self) -> None:
        await self._conn.disconnect()

    async def _execute(self, ops: list[tuple[Any, ...]], *, atomic: bool = True) -> None:
        if not ops:
            return
        commands = write_commands(self._keys, ops, atomic=atomic)
        conn = self._conn
        try:
            async with asyncio.timeout(self._timeout_s):
                if not conn.is_connected:
                    await conn.connect()  # type: ignore[no-untyped-call]  # redis-py lacks a hint
                await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                replies = [await conn.read_response() for _ in commands]
        except BaseException:
            # The replies left unread would answer the next write: start a new connection.
            await conn.disconnect(nowait=True)
            raise
        if atomic:
            _check_exec_reply(replies[-1])


def write_commands(
    keys: dict[str, str], ops: list[tuple[Any, ...]], *, atomic: bool
) -> list[tuple[Any, ...]]:
    """The Redis commands that carry out `ops`, in MULTI/EXEC when `atomic`."""
    commands: list[tuple[Any, ...]] = [("MULTI",)] if atomic else []
    for op in ops:
        kind = op[0]
        if kind == "delete":
            commands.append(("DEL", keys["log"]))
        elif kind == "set_start":
            commands.append(("SET", keys["log_start"], op[1]))
        elif kind == "rpush":
            commands.append(("RPUSH", keys["log"], *op[1]))
        elif kind == "ltrim":
            commands.append(("LTRIM", keys["log"], op[1], op[2]))
        elif kind == "snapshot":
            snapshot = jsonio.dumps_bytes(snapshot_to_wire(op[1]))
            commands.append(("SET", keys["snapshot"], snapshot))
        elif kind == "hard_state":
            commands.append(("SET", keys["hard_state"], _dump_hard_state(op[1])))
        else:
            raise ValueError(f"unknown storage operation {kind!r}")
    if atomic:
        commands.append(("EXEC",))
    return commands


def _check_exec_reply(reply: Any) -> None:
    """EXEC answers None when the transaction was discarded, and lists per-command errors."""
    if not isinstance(reply, list):
        raise ResponseError(f"the Raft write transaction was not applied: {reply!r}")
    for item in reply:
        if isinstance(item, Exception):
            raise item


@dataclass
class InMemoryRaftStorage:
    """The in-memory twin of `RedisRaftStorage`, with the same truncation rules."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    async def load(self) -> Restored:
        return Restored(self.hard_state, self.snapshot, list(self.entries))

    async def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None = None,
        kept_after_snapshot: Sequence[Entry] = (),
    ) -> None:
        if snapshot is not None:
            self.snapshot, self.entries = snapshot, list(kept_after_snapshot)
        if entries:
            first = entries[0].index
            self.entries = [e for e in self.entries if e.index < first] + list(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    async def compact(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.entries = [e for e in self.entries if e.index > snapshot.last_index]
