"""The one adapter between the queue and Redis: executes the builders of ``commands.py``.

It owns a ``redis.asyncio`` client that shares the node's connection pool but has no
response callbacks, so every reply reaches the pure parsers raw. Redis failures are not
caught here: the node turns them into 503 ``unavailable``.

Consume order (one call, up to ``max`` messages):

1. the consumer's own pending entries (after a restart it gets back what it held);
2. entries of any consumer idle for at least ``visibility_ms`` (not acked in time),
   claimed with ``XCLAIM`` and that minimum idle time, so two consumers never both
   claim one entry; ``XPENDING ... IDLE`` finds them together with their delivery counts
   (``XAUTOCLAIM`` would claim too, but does not return the counts);
3. new entries (``XREADGROUP >``), blocking up to ``block_ms`` only if 1 and 2 gave none.

An entry whose next delivery would exceed ``max_deliveries`` is copied to the topic's
dead-letter stream (with the reason) and acked, in one ``MULTI``, instead of delivered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from distcluster_worker.queue_role import commands as cmd
from distcluster_worker.queue_role.commands import Command, Pending, TopicKeys
from distcluster_worker.queue_role.settings import NACK_IDLE_MS, QueueSettings
from distcluster_worker.shell import jsonio


@dataclass(frozen=True)
class Delivered:
    id: str
    body: Any
    deliveries: int


@dataclass(frozen=True)
class ConsumeResult:
    messages: list[Delivered]
    dead_lettered: int


class StreamStore:
    """Topic streams, consumer groups and dead letters in Redis."""

    def __init__(self, client: aioredis.Redis, namespace: str, settings: QueueSettings) -> None:
        # Same pool as the node's client, but raw replies for the pure parsers.
        self.redis = aioredis.Redis(connection_pool=client.connection_pool)
        self.redis.response_callbacks.clear()
        self.namespace = namespace
        self.settings = settings
        self._groups: set[tuple[str, str]] = set()
        self._publish_once = self.redis.register_script(cmd.PUBLISH_ONCE_LUA)

    def keys(self, topic: str) -> TopicKeys:
        return TopicKeys.of(self.namespace, topic)

    async def run(self, command: Command) -> Any:
        return await self.redis.execute_command(*command)  # type: ignore[no-untyped-call]

    async def ping(self) -> bool:
        return bool(await self.redis.execute_command("PING"))  # type: ignore[no-untyped-call]

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
            fresh, joined = await self._publish_once(keys=script_keys, args=args)
            return cmd.parse_ids(joined), not int(fresh)
        if len(encoded) == 1:
            return [cmd.text(await self.run(cmd.xadd(keys.stream, encoded[0])))], False
        async with self.redis.pipeline(transaction=True) as pipe:
            for body in encoded:
                pipe.execute_command(*cmd.xadd(keys.stream, body))
            ids = await pipe.execute()
        return [cmd.text(i) for i in ids], False

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
        out: list[Delivered] = []
        dead = 0
        own = cmd.parse_pending(
            await self.run(cmd.xpending_range(keys.stream, group, count, consumer=consumer))
        )
        got, died = await self._claim(keys, group, consumer, own, 0)
        out, dead = out + got, dead + died
        if len(out) < count:
            raw = await self.run(
                cmd.xpending_range(keys.stream, group, count - len(out), idle_ms=visibility_ms)
            )
            idle = [p for p in cmd.parse_pending(raw) if p.consumer != consumer]
            got, died = await self._claim(keys, group, consumer, idle, visibility_ms)
            out, dead = out + got, dead + died
        if len(out) < count:
            block = block_ms if not out and not dead else None
            raw = await self.run(
                cmd.xreadgroup_new(keys.stream, group, consumer, count - len(out), block)
            )
            out += [Delivered(i, _body(f), 1) for i, f in cmd.parse_xreadgroup(raw)]
        return ConsumeResult(out, dead)

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
            async with self.redis.pipeline(transaction=False) as pipe:
                for entry_id in ids:
                    pipe.execute_command(*cmd.xack(stream, group, [entry_id]))
                done = await pipe.execute()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return 0, list(ids)
        not_found = [i for i, n in zip(ids, done, strict=True) if not int(n)]
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
