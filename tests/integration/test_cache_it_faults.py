"""Cache faults with real processes: a paused holder, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cache_it_harness import LEASE_MS, cache_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_paused_holder_does_not_block_or_serve_stale(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path) as c:
        # A key whose home is not the node we pause, nor the writer.
        key = next(k for k in (f"p{i}" for i in range(100)) if c.home_of(k) == "node1")
        assert (await c.put("node1", key, "old")).status == 200
        assert (await c.get("node3", key)).field("value") == "old"
        assert (await c.lines("node3"))[key] == "S"
        c.nodes["node3"].pause()
        try:
            started = time.monotonic()
            put = await c.put("node2", key, "new")
            took = time.monotonic() - started
            assert put.status == 200, put.body
            assert took < LEASE_MS / 1000 + 3
        finally:
            c.nodes["node3"].resume()
        got = await c.get("node3", key)
        assert got.status == 200 and got.field("value") == "new", got.body
        for node in c.ids:
            assert (await c.get(node, key)).field("value") == "new"


async def test_bad_input(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path, {"CACHE_MAX_VALUE_BYTES": "100"}) as c:
        cases = [
            ("GET", "/cache/" + "a" * 201, None, None, 400),
            ("GET", "/cache/bad%20key", None, None, 400),
            ("PUT", "/cache/bad$key", {"value": "x"}, None, 400),
            ("PUT", "/cache/k", {"value": 5}, None, 400),
            ("PUT", "/cache/k", {"value": "x", "extra": 1}, None, 400),
            ("PUT", "/cache/k", None, "not json", 400),
            ("PUT", "/cache/k", None, "[1]", 400),
            ("PUT", "/cache/k", {"value": "x" * 101}, None, 413),
            ("POST", "/cache/invalidate", {"key": "k"}, None, 400),
            ("POST", "/cache/bus_read", {"key": "k", "txn": [1]}, None, 400),
            ("POST", "/cache/home/renew", {"node": "n", "keys": ["k"], "grants": []}, None, 400),
            ("PUT", "/cache/stats", {"value": "x"}, None, 400),
            ("PUT", "/cache/lines", {"value": "x"}, None, 400),
            ("DELETE", "/cache/stats", None, None, 400),
        ]
        for method, path, payload, data, status in cases:
            reply = await c.call("node1", method, path, payload, data)
            assert reply.status == status, (method, path, reply.body)
            assert reply.code is not None, reply.body
        assert (await c.put("node1", "k", "x" * 100)).status == 200
        reserved = await c.put("node1", "lines", "x")
        assert reserved.code == "reserved_key" and "reserved" in reserved.body["error"]["message"]
        assert (await c.call("node1", "GET", "/cache/stats")).field("capacity") == 1000
        assert (await c.put("node1", "stats.json", "x")).status == 200  # only exact names
