"""Discovery: nodes of one cluster find each other through Redis (``DISCOVERY=redis``).

``PEERS`` names the nodes a node knows at start; a cluster that grows at run time (docker
compose ``--scale``, ``kubectl scale``) has nodes nobody listed. So every
``DISCOVERY_INTERVAL_MS`` each node announces itself (id, role, URL, incarnation) in one
Redis hash of its cluster and reads everyone else's entry in the same round trip. An entry
that is not announced again for ``DISCOVERY_TTL_MS`` is dropped by the next announce of any
node (expiry times come from Redis's own clock, so the nodes' clocks do not matter); a node
that stops gracefully removes its own entry at once.

What a node does with what it reads is the pure `diff` below: ids of its own role that it
did not know are *added* (with their URL), ids it had learned this way and that are gone
from the registry are *gone*. ``PEERS`` always wins: an id it lists keeps its configured
URL (tests route it through proxies) and never leaves. The roles decide what an added or a
gone node means (the queue and cache put a new node on their ring only once it answered a
heartbeat; the lock role only learns its address, Raft membership stays explicit).

A node may also introduce itself before the registry lists it (``learn``: its heartbeat
carries its URL). A node that *left* the registry is not learned back that way: a node
that stops gracefully withdraws first and drains afterwards, still beating its peers, so
its last heartbeats arrive after they dropped it; learning from them would put a leaving
node back on the rings. Only the registry brings such an id back (a restarted node
announces itself before it sends a heartbeat, so it comes back at the next read).

A Redis failure costs one round: the loop logs it and tries again at the next interval.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from distcluster_worker.shell.config import NODE_ID_RE

# KEYS: entries hash, expiry zset. ARGV: id, entry JSON, ttl ms.
# Announces ARGV[1], drops expired entries, returns every entry (flat field/value list).
_ANNOUNCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do
  if id ~= ARGV[1] then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class Entry:
    """One node as announced in the registry."""

    node_id: str
    role: str
    url: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class Diff:
    """What a registry read changes in a node's peer map."""

    added: dict[str, str]
    gone: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.gone)


def diff(
    *,
    self_id: str,
    role: str,
    static: Mapping[str, str],
    discovered: Mapping[str, str],
    listed: Mapping[str, Entry],
) -> Diff:
    """Compare the registry (`listed`) with what this node knows.

    `static` are the PEERS entries (never added, updated or removed here); `discovered`
    the peers learned from earlier reads. A discovered peer whose URL changed (a pod
    recreated with a new address under the same id) is reported as added again.
    """
    added: dict[str, str] = {}
    for node_id, entry in sorted(listed.items()):
        if node_id == self_id or node_id in static or entry.role != role:
            continue
        if discovered.get(node_id) != entry.url:
            added[node_id] = entry.url
    gone = tuple(
        sorted(
            node_id
            for node_id in discovered
            if node_id not in listed or listed[node_id].role != role
        )
    )
    return Diff(added=added, gone=gone)


def parse_entries(raw: Mapping[str, str]) -> dict[str, Entry]:
    """Decode the registry hash; malformed entries (another version, a typo) are skipped."""
    entries: dict[str, Entry] = {}
    for node_id, text in raw.items():
        try:
            body = json.loads(text)
            entry = Entry(node_id, str(body["role"]), str(body["url"]), int(body["incarnation"]))
        except (ValueError, KeyError, TypeError):
            continue
        if NODE_ID_RE.match(node_id) and entry.url.startswith(("http://", "https://")):
            entries[node_id] = entry
    return entries


class Registry:
    """The cluster's registry in Redis: announce this node, read every node."""

    def __init__(self, redis: aioredis.Redis, key: str, me: Entry, ttl_ms: int) -> None:
        self._redis = redis
        self._entries_key = key
        self._expiry_key = f"{key}:expiry"
        self._me = me
        self._ttl_ms = ttl_ms
        self._announce = redis.register_script(_ANNOUNCE)

    async def announce(self) -> dict[str, Entry]:
        """Refresh this node's entry; every live entry of the cluster (this one included)."""
        body = {"role": self._me.role, "url": self._me.url, "incarnation": self._me.incarnation}
        flat = await self._announce(
            keys=[self._entries_key, self._expiry_key],
            args=[self._me.node_id, json.dumps(body), self._ttl_ms],
        )
        pairs = [_text(item) for item in flat]
        return parse_entries(dict(zip(pairs[::2], pairs[1::2], strict=True)))

    async def withdraw(self) -> None:
        """Remove this node's entry (a graceful stop)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self._entries_key, self._me.node_id)
            pipe.zrem(self._expiry_key, self._me.node_id)
            await pipe.execute()


def _text(item: Any) -> str:
    return item.decode() if isinstance(item, bytes) else str(item)


class Discovery:
    """Keeps a node's peer map (``peers``, updated in place) in step with the registry."""

    def __init__(
        self,
        registry: Registry,
        *,
        self_id: str,
        role: str,
        static: Mapping[str, str],
        peers: dict[str, str],
        interval_ms: int,
        ttl_ms: int,
        on_change: Callable[[Diff], None],
        log: Any,
    ) -> None:
        self._registry = registry
        self._self_id = self_id
        self._role = role
        self._static = dict(static)
        self.peers = peers
        self.discovered: dict[str, str] = {}
        self._interval_ms = interval_ms
        self._ttl_s = ttl_ms / 1000
        # Peers that introduced themselves (a heartbeat) before the registry listed
        # them: kept for one TTL even if a read does not list them yet.
        self._introduced: dict[str, float] = {}
        # Peers seen leaving the registry: not learned back from heartbeats until the
        # registry lists them again (see the module docstring).
        self.departed: set[str] = set()
        self._on_change = on_change
        self._log = log
        self._failing = False

    async def withdraw(self) -> None:
        await self._registry.withdraw()

    def learn(self, node_id: str, url: str) -> bool:
        """A peer introduced itself (a heartbeat with its URL); True if it is new here.
        A peer that left the registry is refused until the registry lists it again."""
        if node_id == self._self_id or node_id in self._static or node_id in self.departed:
            return False
        if self.discovered.get(node_id) == url:
            return False
        self._introduced[node_id] = asyncio.get_running_loop().time()
        self._apply(Diff(added={node_id: url}, gone=()))
        return True

    async def run(self) -> None:
        """Announce and read every interval (the first round is the caller's)."""
        while True:
            await asyncio.sleep(self._interval_ms / 1000)
            await self.round()

    async def round(self) -> None:
        try:
            listed = await self._registry.announce()
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                self._log.warning("discovery: Redis unavailable", extra={"error": repr(exc)})
            self._failing = True
            return
        if self._failing:
            self._log.info("discovery: Redis reachable again")
        self._failing = False
        change = diff(
            self_id=self._self_id,
            role=self._role,
            static=self._static,
            discovered=self.discovered,
            listed=listed,
        )
        now = asyncio.get_running_loop().time()
        for node_id, since in list(self._introduced.items()):
            if node_id in listed or now - since > self._ttl_s:
                del self._introduced[node_id]
        gone = tuple(g for g in change.gone if g not in self._introduced)
        self.departed.difference_update(listed)
        self.departed.update(gone)
        change = Diff(added=change.added, gone=gone)
        if change:
            self._apply(change)

    def _apply(self, change: Diff) -> None:
        for node_id, url in change.added.items():
            self.discovered[node_id] = url
            self.peers[node_id] = url
        for node_id in change.gone:
            self.discovered.pop(node_id, None)
            self.peers.pop(node_id, None)
        self._log.info(
            "discovery: peers changed",
            extra={"added": change.added, "gone": list(change.gone)},
        )
        self._on_change(change)
