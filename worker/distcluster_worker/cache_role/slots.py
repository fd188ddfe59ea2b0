"""The slot leases in Redis: one Lua script per round, and the gate the home asks.

Every `round_ms` the node runs `round()`: the `SlotTable` core says which slots to acquire
or renew (those the ring says this node should hold) and which to release; one script
does all of it atomically and answers, per wanted slot, whether this node holds it and
under which tenure, or who does. A slot key holds ``"<node>|<tenure>"`` with an expiry of
the slot lease; tenures come from one counter (INCR), so each acquisition has its own.
A failed round (Redis down) changes nothing: held slots run out at their local
``held_until`` and the home stops acting for their keys.

`SlotLeases` is also what the home asks per key (`acting`, `grants_from`, `holder`,
`fence`): a key's slot is ``slot_of(key_point(key))``, the ring's stable hash.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from distcluster_worker.coherence import Answer, Changes, Outcome, SlotTable, slot_of
from distcluster_worker.coherence import Round as SlotRound
from distcluster_worker.ring import key_point

# KEYS: the tenure counter, then the wanted slots' keys, then the released ones'.
# ARGV: node id, lease in ms, number of wanted slots, then each slot's known tenure (0: none).
# Answers two values per wanted slot: the outcome (0 other, 1 acquired, 2 renewed) and
# the holder as "<node>|<tenure>" ("" when the slot was free).
_ROUND = """
local me, lease, nwant = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i = 2, #KEYS do
  local asked = ARGV[i + 2]
  local mine = me .. '|' .. asked
  local cur = redis.call('GET', KEYS[i])
  if i - 1 <= nwant then
    if not cur then
      local t = redis.call('INCR', KEYS[1])
      redis.call('SET', KEYS[i], me .. '|' .. t, 'PX', lease)
      out[#out + 1] = 1
      out[#out + 1] = me .. '|' .. t
    elseif asked ~= '0' and cur == mine then
      redis.call('PEXPIRE', KEYS[i], lease)
      out[#out + 1] = 2
      out[#out + 1] = cur
    else
      out[#out + 1] = 0
      out[#out + 1] = cur
    end
  elseif cur == mine then
    redis.call('DEL', KEYS[i])
  end
end
return out
"""


def key_slot(key: str) -> int:
    """The slot of a cache key."""
    return slot_of(key_point(key))


def parse_answers(sent: SlotRound, raw: list[Any]) -> list[Answer]:
    """The script's flat answer, one `Answer` per wanted slot of `sent`."""
    if len(raw) != 2 * len(sent.want):
        raise ValueError(f"slot round: {len(raw)} values for {len(sent.want)} slots")
    answers = []
    for i, (slot, _) in enumerate(sent.want):
        value = raw[2 * i + 1]
        text = value.decode() if isinstance(value, bytes) else str(value)
        holder, _, tenure = text.rpartition("|")
        answers.append(Answer(slot, Outcome(int(raw[2 * i])), holder, int(tenure or 0)))
    return answers


class SlotLeases:
    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        table: SlotTable,
        mono: Callable[[], int],
    ) -> None:
        """`prefix`: the Redis namespace of the slot keys (``{prefix}:{slot}``, and the
        tenure counter ``{prefix}:tenure``), apart from the values' keys."""
        self._redis = redis
        self._prefix = prefix
        self.table = table
        self.mono = mono
        self._round: Any = redis.register_script(_ROUND)

    def slot_key(self, slot: int) -> str:
        return f"{self._prefix}:{slot}"

    async def round(self, wanted: frozenset[int]) -> Changes:
        """One round in Redis; raises Redis' errors (the table then keeps what it had)."""
        sent = self.table.plan(wanted, self.mono())
        slots = [s for s, _ in sent.want] + [s for s, _ in sent.release]
        tenures = [t for _, t in sent.want] + [t for _, t in sent.release]
        keys = [f"{self._prefix}:tenure", *(self.slot_key(s) for s in slots)]
        args = [self.table.node_id, self.table.lease_ms, len(sent.want), *tenures]
        raw = await self._round(keys=keys, args=args)
        return self.table.answered(sent, parse_answers(sent, list(raw)), self.mono())

    # -- what the home asks, per key -------------------------------------------------------

    def acting(self, key: str) -> bool:
        """Whether this node holds the key's slot now (it may act as the key's home)."""
        return self.table.holds(key_slot(key), self.mono())

    def grants_from(self, key: str) -> int:
        return self.table.grants_from(key_slot(key))

    def holder(self, key: str) -> str | None:
        return self.table.holder(key_slot(key), self.mono())

    def fence(self, key: str) -> tuple[str, str] | None:
        """The slot key and the value it must still hold for a write of `key` to land."""
        slot = key_slot(key)
        tenure = self.table.tenure(slot)
        if tenure is None:
            return None
        return self.slot_key(slot), f"{self.table.node_id}|{tenure}"

    def held(self) -> list[int]:
        return self.table.held(self.mono())
