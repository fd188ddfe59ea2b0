"""Cache API over 3 real nodes and a real Redis: coherence, concurrency, capacity."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cache_it_harness import cache_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_put_get_invalidate_delete(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path) as c:
        assert (await c.get("node1", "k1")).status == 404
        put = await c.put("node1", "k1", "v1")
        assert put.status == 200, put.body
        got = await c.get("node3", "k1")
        assert got.status == 200 and got.field("value") == "v1"
        assert got.field("state") == "S"
        assert (await c.lines("node1"))["k1"] == "S"
        assert (await c.lines("node3"))["k1"] == "S"
        hit = await c.get("node3", "k1")
        assert hit.field("value") == "v1"
        assert (await c.stats("node3"))["hits"] >= 1

        put2 = await c.put("node2", "k1", "v2")
        assert put2.status == 200 and put2.field("state") == "M"
        for node in c.ids:
            lines = await c.lines(node)
            assert node == "node2" or "k1" not in lines, (node, lines)
        for node in c.ids:
            assert (await c.get(node, "k1")).field("value") == "v2"
        sent = sum([(await c.stats(n))["invalidations_sent"] for n in c.ids])
        assert sent >= 2

        deleted = await c.call("node3", "DELETE", "/cache/k1")
        assert deleted.status == 200
        for node in c.ids:
            assert (await c.get(node, "k1")).status == 404
            assert "k1" not in await c.lines(node)


async def test_concurrent_writers_agree(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path) as c:
        key = "hot"
        await asyncio.gather(*(c.get(n, key) for n in c.ids))

        async def writer(node: str) -> None:
            for i in range(8):
                reply = await c.put(node, key, f"{node}-{i}")
                assert reply.status == 200, reply.body
                # A reader on the writer's node sees at least its own write.
                got = await c.get(node, key)
                assert got.status == 200

        await asyncio.gather(*(writer(n) for n in c.ids))
        values = {(await c.get(n, key)).field("value") for n in c.ids}
        assert len(values) == 1, values
        exclusive = 0
        shared = 0
        for n in c.ids:
            state = (await c.lines(n)).get(key)
            exclusive += state in ("M", "E")
            shared += state == "S"
        assert exclusive <= 1 and (exclusive == 0 or shared == 0)


async def test_capacity_pressure(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path, {"CACHE_CAPACITY": "5", "CACHE_POLICY": "lfu"}) as c:
        for i in range(20):
            assert (await c.put("node1", f"cap{i}", f"value{i}")).status == 200
        for i in range(20):
            got = await c.get("node2", f"cap{i}")
            assert got.field("value") == f"value{i}"
        for node in ("node1", "node2"):
            stats = await c.stats(node)
            assert stats["line_count"] <= 5
            assert stats["evictions"] >= 15
            assert stats["capacity"] == 5 and stats["policy"] == "lfu"
        metrics = await c.session.get(c.urls["node1"] + "/metrics")
        text = await metrics.text()
        assert "distcluster_cache_evictions_total" in text
        assert "distcluster_cache_get_seconds_bucket" in text


async def test_ring_names_one_home_and_home_routing_keeps_one_copy(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path) as c:
        keys = [f"route{i}" for i in range(30)]
        homes: dict[str, str] = {}
        for key in keys:
            answers = {(await c.call(n, "GET", f"/ring?key={key}")).field("home") for n in c.ids}
            assert len(answers) == 1, (key, answers)
            homes[key] = answers.pop()
        assert set(homes.values()) == set(c.ids)  # 30 keys spread over all three homes
        for key, home in homes.items():
            assert (await c.put(home, key, f"v-{key}")).status == 200
            got = await c.get(home, key)
            assert got.field("value") == f"v-{key}"
        for node in c.ids:
            lines = await c.lines(node)
            held = {k for k in keys if k in lines}
            assert held == {k for k, h in homes.items() if h == node}, (node, held)
        ring = await c.call("node1", "GET", "/ring")
        assert ring.status == 200 and sorted(ring.field("members")) == sorted(c.ids)
        bad = await c.call("node1", "GET", "/ring?key=bad%20key")
        assert bad.status == 400 and bad.code == "bad_request"
