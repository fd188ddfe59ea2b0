"""Redis commands of the queue, as pure builders and reply parsers (no I/O).

As in redis-py's ``commands/core.py``, every command is first a tuple of arguments built
by a pure function, and one adapter (``store.py``) executes it. Replies arrive raw (RESP2 or RESP3
lists and bytes: the adapter's client has no response callbacks) and pure parsers turn
them into values, so everything here is tested without Redis.

Key layout, under the cluster namespace (``{prefix}:{cluster}:queue:...``): the kind of
key comes before the topic, and the idempotency key carries the topic's length, so no
two (kind, topic, key) triples can map to the same Redis key even though names may
contain ``:``.

Retention (``trim_threshold``): an entry may be dropped only once every consumer group
has acknowledged it. For one group, everything below its oldest pending entry and at or
below its last-delivered id is acknowledged; so the stream is trimmed with
``XTRIM MINID`` to the smallest such bound over all groups. With no group nothing is
trimmed: a group created later reads the topic from its first entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Arg = str | int | bytes
Command = tuple[Arg, ...]

BODY_FIELD = "b"
DEAD_LETTER_REASON = "max_deliveries"

# Idempotent publish: the XADDs and the remembered ids are one atomic step, so a retry can
# never see the key without the entries or the entries without the key.
PUBLISH_ONCE_LUA = """
local prev = redis.call('GET', KEYS[2])
if prev then return {0, prev} end
local ids = {}
for i = 2, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'b', ARGV[i])
end
local joined = table.concat(ids, ',')
redis.call('SET', KEYS[2], joined, 'PX', ARGV[1])
return {1, joined}
"""


# The scripts below answer with a few flat strings rather than arrays of entries: the
# node's Redis client parses replies in Python, one element at a time, and for 100 stream
# entries (five elements each) that parsing alone costs milliseconds of CPU, more than
# everything else a batch costs the node. One joined string costs about one element.

# A batch is one script call instead of a MULTI of N XADDs (one command to encode and
# one reply to parse; just as atomic). It answers the ids joined by ``,``.
PUBLISH_LUA = """
local ids = {}
for i = 1, #ARGV do
  ids[i] = redis.call('XADD', KEYS[1], '*', 'b', ARGV[i])
end
return table.concat(ids, ',')
"""

# Ack ids one by one so the reply says which ids were pending (XACK with many ids returns
# only a count), in one round trip: one character per id, ``1`` acked, ``0`` not pending.
ACK_LUA = """
local acked = {}
for i = 2, #ARGV do
  acked[i - 1] = redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
end
return table.concat(acked)
"""

# The first step of every consume in one round trip: the consumer's own pending entries,
# then (when ARGV[5] is 1) entries idle for ARGV[4] ms, and, only when both are empty, new
# entries without blocking. Own and idle entries go back to the adapter, which claims or
# dead-letters them (that needs their delivery counts and bodies) before reading new ones,
# so the order of the module docstring of ``store.py`` holds. XREADGROUP cannot BLOCK in a
# script: when nothing came, the adapter blocks with a second, plain command.
# New entries come back as their ids joined by ``,`` and their bodies as one JSON array:
# every body was stored as JSON text by ``publish``, so joining them with ``,`` inside
# ``[...]`` is valid JSON (an entry without a body field reads as ``null``).
CONSUME_LUA = """
local count = tonumber(ARGV[3])
local own = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', count, ARGV[2])
local idle = {}
if #own < count and ARGV[5] == '1' then
  idle = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[4], '-', '+', count - #own)
end
if #own > 0 or #idle > 0 then
  return {own, idle, 0, '', '[]'}
end
local new = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', count,
  'STREAMS', KEYS[1], '>')
local ids, bodies = {}, {}
if new then
  for i, entry in ipairs(new[1][2]) do
    ids[i] = entry[1]
    bodies[i] = 'null'
    local fields = entry[2]
    if fields then
      for j = 1, #fields - 1, 2 do
        if fields[j] == 'b' then bodies[i] = fields[j + 1] end
      end
    end
  end
end
return {own, idle, 1, table.concat(ids, ','), '[' .. table.concat(bodies, ',') .. ']'}
"""


@dataclass(frozen=True)
class TopicKeys:
    """The Redis keys of one topic."""

    stream: str
    dead_letters: str
    namespace: str

    @classmethod
    def of(cls, namespace: str, topic: str) -> TopicKeys:
        """``namespace`` is ``settings.redis_key("queue")``."""
        return cls(f"{namespace}:stream:{topic}", f"{namespace}:dlq:{topic}", namespace)

    def idempotency(self, topic: str, key: str) -> str:
        return f"{self.namespace}:idem:{len(topic)}:{topic}:{key}"


@dataclass(frozen=True)
class Pending:
    """One entry of a group's pending list."""

    id: str
    consumer: str
    idle_ms: int
    deliveries: int


@dataclass(frozen=True)
class GroupInfo:
    name: str
    consumers: int
    pending: int
    last_delivered_id: str


# -- builders ------------------------------------------------------------------------


def xadd(stream: str, body: str) -> Command:
    return ("XADD", stream, "*", BODY_FIELD, body)


def publish_once(
    keys: TopicKeys, topic: str, key: str, bodies: Sequence[str], ttl_ms: int
) -> tuple[list[str], list[Arg]]:
    """KEYS and ARGV of ``PUBLISH_ONCE_LUA``."""
    return [keys.stream, keys.idempotency(topic, key)], [ttl_ms, *bodies]


def publish_batch(stream: str, bodies: Sequence[str]) -> tuple[list[str], list[Arg]]:
    """KEYS and ARGV of ``PUBLISH_LUA``."""
    return [stream], list(bodies)


def ack_each(stream: str, group: str, ids: Sequence[str]) -> tuple[list[str], list[Arg]]:
    """KEYS and ARGV of ``ACK_LUA``."""
    return [stream], [group, *ids]


def consume_first(
    stream: str, group: str, consumer: str, count: int, visibility_ms: int, scan_idle: bool
) -> tuple[list[str], list[Arg]]:
    """KEYS and ARGV of ``CONSUME_LUA``."""
    return [stream], [group, consumer, count, visibility_ms, 1 if scan_idle else 0]


def xgroup_create(stream: str, group: str) -> Command:
    return ("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")


def xreadgroup_new(
    stream: str, group: str, consumer: str, count: int, block_ms: int | None
) -> Command:
    """New entries for ``consumer``; ``block_ms`` None or 0 never blocks (BLOCK 0 is forever)."""
    block: Command = ("BLOCK", block_ms) if block_ms else ()
    return ("XREADGROUP", "GROUP", group, consumer, "COUNT", count, *block, "STREAMS", stream, ">")


def xpending_range(
    stream: str,
    group: str,
    count: int,
    *,
    idle_ms: int | None = None,
    consumer: str | None = None,
    start: str = "-",
    end: str = "+",
) -> Command:
    idle: Command = ("IDLE", idle_ms) if idle_ms is not None else ()
    who: Command = (consumer,) if consumer is not None else ()
    return ("XPENDING", stream, group, *idle, start, end, count, *who)


def xpending_summary(stream: str, group: str) -> Command:
    return ("XPENDING", stream, group)


def xclaim(stream: str, group: str, consumer: str, min_idle_ms: int, ids: Sequence[str]) -> Command:
    return ("XCLAIM", stream, group, consumer, min_idle_ms, *ids)


def xclaim_idle(
    stream: str, group: str, consumer: str, ids: Sequence[str], idle_ms: int
) -> Command:
    """Keep ``ids`` with their consumer but mark them idle for ``idle_ms`` (used by nack).

    JUSTID leaves the delivery count alone: a nack is not a delivery.
    """
    return ("XCLAIM", stream, group, consumer, 0, *ids, "IDLE", idle_ms, "JUSTID")


def xack(stream: str, group: str, ids: Sequence[str]) -> Command:
    return ("XACK", stream, group, *ids)


def xrange_one(stream: str, entry_id: str) -> Command:
    return ("XRANGE", stream, entry_id, entry_id)


def dead_letter(
    dead_letters: str,
    maxlen: int,
    entry: Pending,
    group: str,
    body: bytes | None,
    max_deliveries: int,
) -> Command:
    """XADD of one dead letter: the original id and body, the group, and why."""
    reason = f"{DEAD_LETTER_REASON}: delivered {entry.deliveries} times (limit {max_deliveries})"
    fields: Command = (
        "id", entry.id, "group", group, "consumer", entry.consumer,
        "deliveries", entry.deliveries, "reason", reason,
    )  # fmt: skip
    if body is not None:
        fields = (*fields, BODY_FIELD, body)
    return ("XADD", dead_letters, "MAXLEN", "~", maxlen, "*", *fields)


def xlen(stream: str) -> Command:
    return ("XLEN", stream)


def xinfo_groups(stream: str) -> Command:
    return ("XINFO", "GROUPS", stream)


def xtrim_minid(stream: str, min_id: str) -> Command:
    return ("XTRIM", stream, "MINID", min_id)


# -- parsers -------------------------------------------------------------------------


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_entries(raw: Any) -> list[tuple[str, dict[str, bytes]]]:
    """``[[id, [field, value, ...]], ...]`` (nil entries, deleted meanwhile, are skipped)."""
    entries: list[tuple[str, dict[str, bytes]]] = []
    for item in raw or []:
        if not item or item[1] is None:
            continue
        fields = {k: v for k, v in _as_map(item[1]).items() if isinstance(v, bytes)}
        entries.append((text(item[0]), fields))
    return entries


def parse_xreadgroup(raw: Any) -> list[tuple[str, dict[str, bytes]]]:
    """``[[stream, entries]]`` (RESP2), ``{stream: entries}`` (RESP3), or nil if none came."""
    if not raw:
        return []
    if isinstance(raw, dict):
        return parse_entries(next(iter(raw.values())))
    return parse_entries(raw[0][1])


def parse_pending(raw: Any) -> list[Pending]:
    return [Pending(text(i), text(c), int(idle), int(n)) for i, c, idle, n in raw or []]


def parse_groups(raw: Any) -> list[GroupInfo]:
    groups = []
    for item in raw or []:
        info = _as_map(item)
        groups.append(
            GroupInfo(
                name=text(info["name"]),
                consumers=int(info["consumers"]),
                pending=int(info["pending"]),
                last_delivered_id=text(info["last-delivered-id"]),
            )
        )
    return groups


def _as_map(item: Any) -> dict[str, Any]:
    """A RESP3 map, or a RESP2 flat list of alternating names and values, as a dict."""
    if isinstance(item, dict):
        return {text(k): v for k, v in item.items()}
    return {text(item[i]): item[i + 1] for i in range(0, len(item) - 1, 2)}


def parse_summary_first(raw: Any) -> str | None:
    """The oldest pending id from a summary ``[count, first, last, consumers]``."""
    if not raw or not raw[0]:
        return None
    return text(raw[1])


@dataclass(frozen=True)
class FirstRead:
    """The reply of ``CONSUME_LUA``.

    ``own`` and ``idle`` pending entries; ``read_new`` says whether the script read new
    entries (only when both lists were empty); then their ids and their bodies, still
    encoded as one JSON array, in the same order.
    """

    own: list[Pending]
    idle: list[Pending]
    read_new: bool
    new_ids: list[str]
    new_bodies_json: bytes


def parse_consume_first(raw: Any) -> FirstRead:
    bodies = raw[4]
    return FirstRead(
        own=parse_pending(raw[0]),
        idle=parse_pending(raw[1]),
        read_new=bool(int(raw[2])),
        new_ids=parse_ids(raw[3]),
        new_bodies_json=bodies if isinstance(bodies, bytes) else str(bodies).encode(),
    )


def parse_acked(raw: Any) -> list[bool]:
    """The reply of ``ACK_LUA``: whether each id was pending (and is now acked)."""
    return [flag == "1" for flag in text(raw or b"")]


def parse_ids(raw: Any) -> list[str]:
    return [text(i) for i in raw.split(b"," if isinstance(raw, bytes) else ",")] if raw else []


# -- pure decisions ------------------------------------------------------------------


def split_dead(
    pending: Sequence[Pending], max_deliveries: int
) -> tuple[list[Pending], list[Pending]]:
    """(to deliver, to dead-letter): one more delivery must not exceed ``max_deliveries``."""
    deliver = [p for p in pending if p.deliveries < max_deliveries]
    dead = [p for p in pending if p.deliveries >= max_deliveries]
    return deliver, dead


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    ms, seq = id_key(entry_id)
    return f"{ms}-{seq + 1}"


def id_age_ms(entry_id: str, now_ms: int) -> int:
    """How long ago an entry was added (ids start with Redis' clock in ms)."""
    return max(0, now_ms - id_key(entry_id)[0])


def trim_threshold(groups: Sequence[tuple[str, str | None]]) -> str | None:
    """The MINID below which every group has acked: see the module docstring.

    ``groups`` holds (last delivered id, oldest pending id or None) per group.
    """
    if not groups:
        return None
    bounds = [first if first is not None else next_id(last) for last, first in groups]
    return min(bounds, key=id_key)
