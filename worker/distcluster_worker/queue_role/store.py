"""The one adapter between the queue and Redis: executes the builders of ``commands.py``.

Single commands and scripts run on ``Lanes`` (``lanes.py``: connections made with the
node client's settings, without the client's per-command overhead); the few pipelines
(dead letters, nack, stats) run on a ``redis.asyncio`` client that shares the node's
connection pool but has no response callbacks. Either way every reply reaches the pure
parsers raw. Redis failures are not caught here: the node turns them into 503
``unavailable``.

Consume order (one call, up to ``max`` messages):

1. the consumer's own pending entries (after a restart it gets back what it held);
2. entries of any consumer idle for at least ``visibility_ms`` (not acked in time),
   claimed with ``XCLAIM`` and that minimum idle time, so two consumers never both
   claim one entry; ``XPENDING ... IDLE`` finds them together with their delivery counts
   (``XAUTOCLAIM`` would claim too, but does not return the counts). The scan is skipped
   for ``QUEUE_IDLE_SCAN_INTERVAL_MS`` after one that found every idle entry
   (``idle_scans.py``);
3. new entries (``XREADGROUP >``), blocking up to ``block_ms`` only if 1 and 2 gave none.

Round trips are what a message costs a node (each is a command to encode, a reply to
parse and a wake-up), so the common paths take one: steps 1 to 3 without blocking are
one script (``CONSUME_LUA``); only when it finds nothing and the consumer asked to wait
does a second command block; pending entries found in steps 1 and 2 (after a crash or a
timeout, not in steady state) take their own commands. A batch publish is one script,
and so is an ack of many ids.

An entry whose next delivery would exceed ``max_deliveries`` is copied to the topic's
dead-letter stream (with the reason) and acked, in one ``MULTI``, instead of delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from distcluster_worker.queue_role import commands as cmd
from distcluster_worker.queue_role.commands import Command, FirstRead, Pending, TopicKeys
from distcluster_worker.queue_role.idle_scans import IdleScans
from distcluster_worker.queue_role.lanes import Lanes, LuaScript
from distcluster_worker.queue_role.settings import NACK_IDLE_MS, QueueSettings
from distcluster_worker.shell import jsonio
from distcluster_worker.shell.heartbeats import loop_ms


@dataclass(frozen=True)
class Delivered:
    id: str
    body: Any
    deliveries: int


@dataclass(frozen=True)
class ConsumeResult:
    messages: list[Delivered]
    dead_lettered: int


class StreamStorage(Protocol):
    """What the queue node asks of its storage: ``StreamStore`` below, or its in-memory
    twin ``memory_store.InMemoryStreamStore`` in tests of the node's own logic."""

    async def publish(
        self, topic: str, bodies: Sequence[Any], idempotency_key: str | None
    ) -> tuple[list[str], bool]: ...

    async def consume(
        self, topic: str, group: str, consumer: str, count: int, visibility_ms: int, block_ms: int
    ) -> ConsumeResult: ...

    async def ack(self, topic: str, group: str, ids: Sequence[str]) -> tuple[int, list[str]]: ...

    async def nack(self, topic: str, group: str, ids: Sequence[str]) -> tuple[int, list[str]]: ...

    async def stats(self, topic: str, now_ms: int) -> dict[str, Any]: ...

    async def trim(self, topic: str) -> int: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class StreamStore:
    """Topic streams, consumer groups and dead letters in Redis."""

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        settings: QueueSettings,
        *,
        clock_ms: Callable[[], int] = loop_ms,
    ) -> None:
        # Same pool as the node's client, but raw replies for the pure parsers.
        self.redis = aioredis.Redis(connection_pool=client.connection_pool)
        self.redis.response_callbacks.clear()
        self.namespace = namespace
        self.settings = settings
        self._clock_ms = clock_ms
        self.lanes = Lanes(client.connection_pool)
        self._groups: set[tuple[str, str]] = set()
        self.idle_scans = IdleScans(settings.idle_scan_interval_ms)
        self._publish_once = LuaScript(cmd.PUBLISH_ONCE_LUA)
        self._publish_batch = LuaScript(cmd.PUBLISH_LUA)
        self._ack_each = LuaScript(cmd.ACK_LUA)
        self._consume_first = LuaScript(cmd.CONSUME_LUA)

    def keys(self, topic: str) -> TopicKeys:
        return TopicKeys.of(self.namespace, topic)

    async def run(self, command: Command) -> Any:
        return await self.lanes.execute(*command)

    async def ping(self) -> bool:
        return bool(await self.lanes.execute("PING"))

    async def close(self) -> None:
        await self.lanes.close()

    # -- publish ---------------------------------------------------------------------

    async def publish(
        self, topic: str, bodies: Sequence[Any], idempotency_key: str | None
    ) -> tuple[list[str], bool]:
        """Append ``bodies``; return (ids, duplicate). Returns only after Redis accepted."""
        keys = self.keys(topic)
        encoded = [jsonio.dumps(body) for body in bodies]
        if idempotency_key is not None:
            script_keys, args = cmd.publish_once(
                keys, topic, idempotency_key, encoded, self.settings.idempotency_ttl_ms
            )
            fresh, joined = await self.lanes.script(self._publish_once, script_keys, args)
            return cmd.parse_ids(joined), not int(fresh)
        if len(encoded) == 1:
            return [cmd.text(await self.run(cmd.xadd(keys.stream, encoded[0])))], False
        script_keys, args = cmd.publish_batch(keys.stream, encoded)
        return cmd.parse_ids(await self.lanes.script(self._publish_batch, script_keys, args)), False

    # -- consume ---------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str, *, force: bool = False) -> None:
        if (stream, group) in self._groups and not force:
            return
        try:
            await self.run(cmd.xgroup_create(stream, group))
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add((stream, group))

    async def consume(
        self, topic: str, group: str, consumer: str, count: int, visibility_ms: int, block_ms: int
    ) -> ConsumeResult:
        stream = self.keys(topic).stream
        await self.ensure_group(stream, group)
        try:
            return await self._consume(topic, group, consumer, count, visibility_ms, block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The group vanished (Redis lost its data): create it again, once.
            await self.ensure_group(stream, group, force=True)
            return await self._consume(topic, group, consumer, count, visibility_ms, block_ms)

    async def _consume(
        self, topic: str, group: str, consumer: str, count: int, visibility_ms: int, block_ms: int
    ) -> ConsumeResult:
        keys = self.keys(topic)
        first = await self._first_read(keys.stream, group, consumer, count, visibility_ms)
        if first.read_new:
            # Steady state: nothing was pending, so new entries are all there is to give.
            out = _new_entries(first)
            if not out and block_ms:
                out = await self._read_new(keys.stream, group, consumer, count, block_ms)
            return ConsumeResult(out, 0)
        out, dead = await self._claim(keys, group, consumer, first.own, 0)
        idle = [p for p in first.idle if p.consumer != consumer]
        got, died = await self._claim(keys, group, consumer, idle, visibility_ms)
        out, dead = out + got, dead + died
        if len(out) < count:
            block = block_ms if not out and not dead else None
            out += await self._read_new(keys.stream, group, consumer, count - len(out), block)
        return ConsumeResult(out, dead)

    async def _first_read(
        self, stream: str, group: str, consumer: str, count: int, visibility_ms: int
    ) -> FirstRead:
        """Own pending, idle (unless a recent scan saw them all) and maybe new, at once."""
        scan_key = (stream, group, visibility_ms)
        scan = self.idle_scans.due(scan_key, self._clock_ms())
        script_keys, args = cmd.consume_first(stream, group, consumer, count, visibility_ms, scan)
        first = cmd.parse_consume_first(
            await self.lanes.script(self._consume_first, script_keys, args)
        )
        if scan and len(first.own) < count:
            asked = count - len(first.own)
            self.idle_scans.scanned(scan_key, self._clock_ms(), asked=asked, found=len(first.idle))
        return first

    async def _read_new(
        self, stream: str, group: str, consumer: str, count: int, block_ms: int | None
    ) -> list[Delivered]:
        raw = await self.run(cmd.xreadgroup_new(stream, group, consumer, count, block_ms))
        return [Delivered(i, _body(f), 1) for i, f in cmd.parse_xreadgroup(raw)]

    async def _claim(
        self, keys: TopicKeys, group: str, consumer: str, pending: list[Pending], min_idle_ms: int
    ) -> tuple[list[Delivered], int]:
        deliver, dead = cmd.split_dead(pending, self.settings.max_deliveries)
        for entry in dead:
            await self._dead_letter(keys, group, entry)
        if not deliver:
            return [], len(dead)
        ids = [p.id for p in deliver]
        raw = await self.run(cmd.xclaim(keys.stream, group, consumer, min_idle_ms, ids))
        counts = {p.id: p.deliveries + 1 for p in deliver}
        got = [Delivered(i, _body(f), counts[i]) for i, f in cmd.parse_entries(raw)]
        return got, len(dead)

    async def _dead_letter(self, keys: TopicKeys, group: str, entry: Pending) -> None:
        found = cmd.parse_entries(await self.run(cmd.xrange_one(keys.stream, entry.id)))
        body = found[0][1].get(cmd.BODY_FIELD) if found else None
        s = self.settings
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.execute_command(
                *cmd.dead_letter(
                    keys.dead_letters, s.dead_letter_maxlen, entry, group, body, s.max_deliveries
                )
            )
            pipe.execute_command(*cmd.xack(keys.stream, group, [entry.id]))
            await pipe.execute()

    # -- ack / nack ------------------------------------------------------------------

    async def ack(self, topic: str, group: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        """(number acked, ids that were not pending in the group)."""
        stream = self.keys(topic).stream
        try:
            script_keys, args = cmd.ack_each(stream, group, ids)
            acked = cmd.parse_acked(await self.lanes.script(self._ack_each, script_keys, args))
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return 0, list(ids)
        not_found = [i for i, ok in zip(ids, acked, strict=True) if not ok]
        return len(ids) - len(not_found), not_found

    async def nack(self, topic: str, group: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        """Make pending ``ids`` claimable by any consumer now; (count, not pending ids)."""
        stream = self.keys(topic).stream
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry_id in ids:
                    pipe.execute_command(
                        *cmd.xpending_range(stream, group, 1, start=entry_id, end=entry_id)
                    )
                found = await pipe.execute()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return 0, list(ids)
        owners: dict[str, list[str]] = {}
        not_found: list[str] = []
        for entry_id, raw in zip(ids, found, strict=True):
            pending = cmd.parse_pending(raw)
            if pending:
                owners.setdefault(pending[0].consumer, []).append(entry_id)
            else:
                not_found.append(entry_id)
        for consumer, owned in owners.items():
            await self.run(cmd.xclaim_idle(stream, group, consumer, owned, NACK_IDLE_MS))
        self.idle_scans.forget(stream, group)  # they are idle now: the next consume looks
        return len(ids) - len(not_found), not_found

    # -- stats and retention ---------------------------------------------------------

    async def groups(self, stream: str) -> list[cmd.GroupInfo]:
        try:
            return cmd.parse_groups(await self.run(cmd.xinfo_groups(stream)))
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return []
            raise

    async def oldest_pending(
        self, stream: str, groups: Sequence[cmd.GroupInfo]
    ) -> list[str | None]:
        if not groups:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.execute_command(*cmd.xpending_summary(stream, group.name))
            raw = await pipe.execute()
        return [cmd.parse_summary_first(r) for r in raw]

    async def stats(self, topic: str, now_ms: int) -> dict[str, Any]:
        keys = self.keys(topic)
        length = int(await self.run(cmd.xlen(keys.stream)))
        dead = int(await self.run(cmd.xlen(keys.dead_letters)))
        groups = await self.groups(keys.stream)
        oldest = await self.oldest_pending(keys.stream, groups)
        return {
            "topic": topic,
            "length": length,
            "dead_letters": dead,
            "groups": [_group_stats(g, o, now_ms) for g, o in zip(groups, oldest, strict=True)],
        }

    async def trim(self, topic: str) -> int:
        """Drop entries every group acked, when the stream is longer than QUEUE_MAXLEN."""
        stream = self.keys(topic).stream
        if int(await self.run(cmd.xlen(stream))) <= self.settings.maxlen:
            return 0
        groups = await self.groups(stream)
        oldest = await self.oldest_pending(stream, groups)
        bound = cmd.trim_threshold(
            [(g.last_delivered_id, o) for g, o in zip(groups, oldest, strict=True)]
        )
        if bound is None:
            return 0
        return int(await self.run(cmd.xtrim_minid(stream, bound)))


def _new_entries(first: FirstRead) -> list[Delivered]:
    """The new entries of a first read, delivered for the first time."""
    bodies = jsonio.loads(first.new_bodies_json)
    if not isinstance(bodies, list) or len(bodies) != len(first.new_ids):
        raise RuntimeError(f"consume script answered {len(first.new_ids)} ids but {bodies!r:.80}")
    return [Delivered(i, body, 1) for i, body in zip(first.new_ids, bodies, strict=True)]


def _body(fields: dict[str, bytes]) -> Any:
    raw = fields.get(cmd.BODY_FIELD)
    return jsonio.loads(raw) if raw is not None else None


def _group_stats(group: cmd.GroupInfo, oldest: str | None, now_ms: int) -> dict[str, Any]:
    return {
        "name": group.name,
        "consumers": group.consumers,
        "pending": group.pending,
        "last_delivered_id": group.last_delivered_id,
        "oldest_pending_id": oldest,
        "oldest_pending_age_ms": cmd.id_age_ms(oldest, now_ms) if oldest else None,
    }
