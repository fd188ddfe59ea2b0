"""Slot leases with real processes: each slot has one home, whatever the nodes' views.

The asymmetric partition: node1 and node3 cannot reach each other, node2 reaches both, for
longer than CACHE_DEAD_AFTER_MS. node1 drops node3 from its ring and node3 drops node1, so
for a key that node1 is home of, node3's own ring can name node3 instead. Without slot
leases node3 then acts as the key's home too: it grants itself a copy, a PUT through node2
(node1 is home by node2's ring) never invalidates it, and node3 keeps reading the old value
after the PUT returned. With slot leases node3 cannot take the slot node1 holds in Redis,
so it never acts as the key's home; its reads go to node1 (503 while it is unreachable).

The check is the shared `History.stale_reads`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from cache_it_harness import CacheCluster, History, cache_cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CANDIDATES = 200


async def ring_home(c: CacheCluster, node: str, key: str) -> str:
    """The key's home as `node`'s ring sees it."""
    return str((await c.call(node, "GET", f"/ring?key={key}")).field("home"))


async def put(c: CacheCluster, history: History, node: str, key: str, value: str) -> int:
    reply = await c.put(node, key, value)
    if reply.status == 200:
        history.confirmed(key, value, int(reply.field("version")), time.monotonic())
    return reply.status


async def read(c: CacheCluster, history: History, node: str, key: str) -> tuple[int, str | None]:
    started = time.monotonic()
    reply = await c.get(node, key)
    history.read(node, key, started, time.monotonic(), reply.status, reply.field("value"))
    return reply.status, reply.field("state") if reply.status == 200 else None


async def test_an_asymmetric_partition_longer_than_dead_after_gives_no_stale_read(
    tmp_path: Path,
) -> None:
    async with cache_cluster(tmp_path) as c:
        keys = [f"asym{i}" for i in range(CANDIDATES)]
        at_node1 = [k for k in keys if await ring_home(c, "node1", k) == "node1"]
        c.mesh.cut("node1", "node3", blackhole=False)
        c.mesh.cut("node3", "node1", blackhole=False)
        await wait_for(
            c.rings,
            lambda r: (r.get("node3"), r.get("node1")) == (["node2", "node3"], ["node1", "node2"]),
            30,
            "node1 and node3 to drop each other",
        )
        assert (await c.rings())["node2"] == ["node1", "node2", "node3"]
        key = [k for k in at_node1 if await ring_home(c, "node3", k) == "node3"][0]
        history = History()
        assert await put(c, history, "node2", key, "v1") == 200
        # node3 reads the key until it keeps a copy (without slot leases, once its grace as
        # the key's second home is over), or for 4 s.
        states: set[str | None] = set()
        until = time.monotonic() + 4.0
        while time.monotonic() < until and not states & {"M", "E", "S"}:
            states.add((await read(c, history, "node3", key))[1])
            await asyncio.sleep(0.05)
        assert await put(c, history, "node2", key, "v2") == 200  # node1 orders it
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            await read(c, history, "node3", key)
            await read(c, history, "node2", key)
        stale = history.stale_reads()
        assert not stale, (stale[:5], states)
        assert not states & {"M", "E", "S"}, states  # node3 never acted as the key's home
        c.mesh.heal_all()
        healed = await wait_for(
            lambda: c.get("node3", key), lambda r: r.status == 200, 20, "node3 to read again"
        )
        assert healed.field("value") == "v2"


async def test_every_slot_has_one_home_and_a_dead_homes_slots_move(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path) as c:

        async def held() -> dict[str, int]:
            return {n: int((await c.stats(n))["home_slots"]) for n in c.ids}

        counts = await wait_for(held, lambda h: sum(h.values()) == 256, 10, "256 slots held")
        assert all(n > 40 for n in counts.values()), counts  # about a third each
        key = c.key_homed_at("node3", prefix="dead")
        assert (await c.put("node1", key, "before")).status == 200
        c.kill("node3")
        killed_at = time.monotonic()
        alive = ["node1", "node2"]
        # Writes to its keys come back once node3 is dropped (CACHE_DEAD_AFTER_MS, 4 s here),
        # its slot ran out in Redis (3 s from its last round) and a copy lease (1 s) passed.
        await wait_for(
            lambda: c.put("node1", key, "after"), lambda r: r.status == 200, 20, "a new home"
        )
        takeover_s = time.monotonic() - killed_at
        assert 4.0 < takeover_s < 4.0 + 1.0 + 2.5, takeover_s

        async def held_alive() -> dict[str, int]:
            return {n: int((await c.stats(n))["home_slots"]) for n in alive}

        moved = await wait_for(held_alive, lambda h: sum(h.values()) == 256, 20, "node3's slots")
        assert all(moved[n] > counts[n] for n in alive), (counts, moved)
