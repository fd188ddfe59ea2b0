"""Leases with real processes: renewal keeps a copy past its first lease; a node cut off
from the key's home stops serving its copy, and a write completes without it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cache_it_harness import LEASE_MS, cache_cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_renewed_line_stays_a_hit_past_its_first_lease(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path) as c:
        key = c.key_homed_at("node1")
        assert (await c.put("node1", key, "v1")).status == 200
        assert (await c.get("node2", key)).field("state") == "S"  # a miss: now a copy
        before = await c.stats("node2")
        await asyncio.sleep(3 * LEASE_MS / 1000)  # three leases, renewed all along
        got = await c.get("node2", key)
        assert got.status == 200 and got.field("value") == "v1"
        after = await c.stats("node2")
        assert after["hits"] == before["hits"] + 1, (before, after)
        assert after["misses"] == before["misses"]
        assert after["renewals_sent"] > before["renewals_sent"]
        assert (await c.stats("node1"))["home_renewals"] > 0


async def test_partitioned_node_stops_serving_and_a_write_completes_without_it(
    tmp_path: Path,
) -> None:
    """Membership is not involved: the test ends before the cut node could be declared
    dead (CACHE_DEAD_AFTER_MS=4000), so only the lease protects the readers."""
    async with cache_cluster(tmp_path) as c:
        key = c.key_homed_at("node1", prefix="part")
        assert (await c.put("node1", key, "old")).status == 200
        assert (await c.get("node3", key)).field("value") == "old"
        assert (await c.lines("node3"))[key] == "S"

        c.mesh.isolate("node3", blackhole=False)  # refused at once, both directions
        put = await c.put("node2", key, "new")  # waits for node3's lease, not for node3
        assert put.status == 200, put.body
        got = await c.get("node3", key)  # its renewals fail: the copy is gone by now
        assert got.status == 503 and got.code == "unavailable", got.body
        assert key not in await c.lines("node3")
        assert (await c.get("node1", key)).field("value") == "new"

        c.mesh.heal_all()
        healed = await wait_for(
            lambda: c.get("node3", key), lambda r: r.status == 200, 10, "node3 to read again"
        )
        assert healed.field("value") == "new"
