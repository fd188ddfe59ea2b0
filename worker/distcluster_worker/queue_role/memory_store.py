"""The in-memory twin of the queue's stream storage (``StreamStorage`` in ``store.py``).

``StreamStore`` (Redis Streams) is the production adapter; ``InMemoryStreamStore`` keeps
the same observable behaviour in dicts, so tests of the node's own logic (forwarding,
serving locally when the owner is unreachable, error mapping) run without Redis, and a
parity test holds the twin to the adapter (``tests/unit/queue_role``).

What the twin models, as Redis Streams does: entry ids ``ms-seq`` that only grow (``ms``
from the injected clock, never going back); per group a last-delivered id and a pending
list of (consumer, delivery time, delivery count); consume in the adapter's order (own
pending, then entries idle for ``visibility_ms``, then new ones, blocking up to
``block_ms`` through the event loop when nothing came); dead letters after
``max_deliveries``; nack; idempotent publish; retention by the same ``trim_threshold``.
Where it is simpler: it scans for idle entries on every consume (the adapter may skip a
scan for ``QUEUE_IDLE_SCAN_INTERVAL_MS``), idempotency keys never expire, and a group
counts the consumers that ever consumed. Setting ``down`` makes every call fail the way
a lost Redis does (``ConnectionError``, which the node answers with 503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from distcluster_worker.queue_role import commands as cmd
from distcluster_worker.queue_role.commands import Pending
from distcluster_worker.queue_role.settings import QueueSettings
from distcluster_worker.queue_role.store import ConsumeResult, Delivered
from distcluster_worker.shell import jsonio


@dataclass
class _Owed:
    """One pending entry: who holds it, when it was last delivered, how often."""

    consumer: str
    delivered_ms: float
    deliveries: int


@dataclass
class _Group:
    last_delivered_id: str = "0-0"
    pending: dict[str, _Owed] = field(default_factory=dict)
    consumers: set[str] = field(default_factory=set)


@dataclass
class _Topic:
    entries: dict[str, str] = field(default_factory=dict)  # id -> body as JSON text
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, _Group] = field(default_factory=dict)
    published: asyncio.Event = field(default_factory=asyncio.Event)


class InMemoryStreamStore:
    """Topics, consumer groups and dead letters in memory (one instance = one Redis)."""

    def __init__(self, settings: QueueSettings, clock_ms: Callable[[], int]) -> None:
        self.settings = settings
        self._clock_ms = clock_ms
        self._topics: dict[str, _Topic] = {}
        self._once: dict[str, list[str]] = {}
        self._last_id = (0, -1)
        self.down = False

    def _topic(self, name: str) -> _Topic:
        self._check_up()
        return self._topics.setdefault(name, _Topic())

    def _check_up(self) -> None:
        if self.down:
            raise ConnectionError("the in-memory store is down")

    def _next_id(self) -> str:
        ms = max(self._clock_ms(), self._last_id[0])
        seq = self._last_id[1] + 1 if ms == self._last_id[0] else 0
        self._last_id = (ms, seq)
        return f"{ms}-{seq}"

    async def publish(
        self, topic: str, bodies: Sequence[Any], idempotency_key: str | None
    ) -> tuple[list[str], bool]:
        state = self._topic(topic)
        key = f"{len(topic)}:{topic}:{idempotency_key}"
        if idempotency_key is not None and key in self._once:
            return list(self._once[key]), True
        ids = [self._next_id() for _ in bodies]
        for entry_id, body in zip(ids, bodies, strict=True):
            state.entries[entry_id] = jsonio.dumps(body)
        if idempotency_key is not None:
            self._once[key] = ids
        state.published.set()
        state.published = asyncio.Event()
        return ids, False

    async def consume(
        self, topic: str, group: str, consumer: str, count: int, visibility_ms: int, block_ms: int
    ) -> ConsumeResult:
        state = self._topic(topic)
        owner = state.groups.setdefault(group, _Group())
        owner.consumers.add(consumer)
        now = self._clock_ms()
        # Pending entries keep id order (new ones always have the largest ids). As the
        # adapter does: look at up to count - len(own) idle entries, then drop the
        # consumer's own (it gets them back first), so a batch may come back short.
        own = [i for i, p in owner.pending.items() if p.consumer == consumer][:count]
        idle = [i for i, p in owner.pending.items() if now - p.delivered_ms >= visibility_ms]
        idle = [i for i in idle[: max(0, count - len(own))] if i not in own]
        out, dead = self._claim(state, owner, group, consumer, own, now)
        got, died = self._claim(state, owner, group, consumer, idle, now)
        out, dead = out + got, dead + died
        if len(out) < count:
            out += self._read_new(state, owner, consumer, count - len(out), now)
        if not out and not dead and block_ms:
            try:
                await asyncio.wait_for(state.published.wait(), block_ms / 1000)
            except TimeoutError:
                return ConsumeResult([], 0)
            out = self._read_new(state, owner, consumer, count, self._clock_ms())
        return ConsumeResult(out, dead)

    def _claim(
        self, state: _Topic, owner: _Group, group: str, consumer: str, ids: list[str], now: int
    ) -> tuple[list[Delivered], int]:
        pending = [
            Pending(i, owner.pending[i].consumer, 0, owner.pending[i].deliveries) for i in ids
        ]
        deliver, dead = cmd.split_dead(pending, self.settings.max_deliveries)
        for entry in dead:
            del owner.pending[entry.id]
            body = state.entries.get(entry.id)
            state.dead_letters.append({"id": entry.id, "group": group, "body": body})
        out = []
        for entry in deliver:
            if entry.id not in state.entries:  # trimmed meanwhile: XCLAIM skips it
                continue
            owner.pending[entry.id] = _Owed(consumer, now, entry.deliveries + 1)
            body = jsonio.loads(state.entries[entry.id])
            out.append(Delivered(entry.id, body, entry.deliveries + 1))
        return out, len(dead)

    def _read_new(
        self, state: _Topic, owner: _Group, consumer: str, count: int, now: int
    ) -> list[Delivered]:
        after = cmd.id_key(owner.last_delivered_id)
        fresh = [i for i in state.entries if cmd.id_key(i) > after][:count]
        for entry_id in fresh:
            owner.pending[entry_id] = _Owed(consumer, now, 1)
        if fresh:
            owner.last_delivered_id = fresh[-1]
        return [Delivered(i, jsonio.loads(state.entries[i]), 1) for i in fresh]

    async def ack(self, topic: str, group: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        owner = self._topic(topic).groups.get(group)
        not_found = []
        for entry_id in ids:
            if owner is None or owner.pending.pop(entry_id, None) is None:
                not_found.append(entry_id)
        return len(ids) - len(not_found), not_found

    async def nack(self, topic: str, group: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        owner = self._topic(topic).groups.get(group)
        not_found = []
        for entry_id in ids:
            owed = owner.pending.get(entry_id) if owner is not None else None
            if owed is None:
                not_found.append(entry_id)
            else:
                owed.delivered_ms = float("-inf")  # idle forever: claimable at once
        return len(ids) - len(not_found), not_found

    async def stats(self, topic: str, now_ms: int) -> dict[str, Any]:
        state = self._topic(topic)
        groups = []
        for name, owner in sorted(state.groups.items()):
            oldest = min(owner.pending, key=cmd.id_key) if owner.pending else None
            groups.append(
                {
                    "name": name,
                    "consumers": len(owner.consumers),
                    "pending": len(owner.pending),
                    "last_delivered_id": owner.last_delivered_id,
                    "oldest_pending_id": oldest,
                    "oldest_pending_age_ms": cmd.id_age_ms(oldest, now_ms) if oldest else None,
                }
            )
        length, dead = len(state.entries), len(state.dead_letters)
        return {"topic": topic, "length": length, "dead_letters": dead, "groups": groups}

    async def trim(self, topic: str) -> int:
        state = self._topic(topic)
        if len(state.entries) <= self.settings.maxlen:
            return 0
        bounds = []
        for owner in state.groups.values():
            oldest = min(owner.pending, key=cmd.id_key) if owner.pending else None
            bounds.append((owner.last_delivered_id, oldest))
        threshold = cmd.trim_threshold(bounds)
        if threshold is None:
            return 0
        dropped = [i for i in state.entries if cmd.id_key(i) < cmd.id_key(threshold)]
        for entry_id in dropped:
            del state.entries[entry_id]
        return len(dropped)

    async def ping(self) -> bool:
        self._check_up()
        return True

    async def close(self) -> None:
        return None
