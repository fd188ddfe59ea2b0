"""Redis as main memory: one hash per key, ``val`` and ``ver``.

Writes are ordered by the key's home, so a write simply increments the version and sets
(or, for a delete, removes) the value in one Lua script; the version survives deletes, so
versions in memory only grow. The same script checks that the key's slot still holds the
home's tenure (`slots.py`) and writes nothing otherwise: a home that lost its slot, however
late it learns it, can never write behind the next home's back. A write-back is fenced
by version: it lands only if its version is newer than memory's, so a late write-back can
never undo a newer write.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

_WRITE = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return -1
end
local v = redis.call('HINCRBY', KEYS[1], 'ver', 1)
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'val', ARGV[2])
else
  redis.call('HDEL', KEYS[1], 'val')
end
return v
"""

_WRITE_BACK = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'ver') or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('HSET', KEYS[1], 'ver', ARGV[1], 'val', ARGV[2])
  return 1
end
return 0
"""


class CacheStore:
    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._write: Any = redis.register_script(_WRITE)
        self._write_back: Any = redis.register_script(_WRITE_BACK)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:{key}"

    async def read(self, key: str) -> tuple[str | None, int]:
        """(value or None when absent, version)."""
        raw_val, raw_ver = await self._redis.hmget(self._key(key), ["val", "ver"])
        value = raw_val.decode() if isinstance(raw_val, bytes) else raw_val
        return value, int(raw_ver or 0)

    async def write(self, key: str, value: str | None, fence: tuple[str, str]) -> int | None:
        """Store `value` (None deletes) if the slot key `fence[0]` holds `fence[1]`; returns
        the new version, or None when the slot is no longer this home's (nothing written)."""
        args = ["1", value, fence[1]] if value is not None else ["0", "", fence[1]]
        version = int(await self._write(keys=[self._key(key), fence[0]], args=args))
        return version if version >= 0 else None

    async def write_back(self, key: str, value: str, version: int) -> bool:
        return bool(await self._write_back(keys=[self._key(key)], args=[version, value]))

    async def ping(self) -> bool:
        return bool(await self._redis.ping())
