"""Discovery: the pure diff, the registry in a real Redis, and the loop that applies both."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from distcluster_worker.shell.discovery import Diff, Discovery, Entry, Registry, diff, parse_entries

LOG = logging.getLogger("test.discovery")


def entry(node_id: str, url: str, role: str = "queue") -> Entry:
    return Entry(node_id, role, url, 1)


def test_diff_adds_new_nodes_of_the_same_role_only() -> None:
    listed = {
        "a": entry("a", "http://a:1"),
        "b": entry("b", "http://b:1"),
        "c": entry("c", "http://c:1", role="cache"),
        "me": entry("me", "http://me:1"),
    }
    change = diff(self_id="me", role="queue", static={}, discovered={}, listed=listed)
    assert change == Diff(added={"a": "http://a:1", "b": "http://b:1"}, gone=())


def test_peers_win_over_the_registry() -> None:
    listed = {"a": entry("a", "http://elsewhere:1")}
    static = {"a": "http://proxy:9"}
    assert not diff(self_id="me", role="queue", static=static, discovered={}, listed=listed)


def test_diff_reports_departed_and_moved_nodes() -> None:
    listed = {"a": entry("a", "http://a:2"), "c": entry("c", "http://c:1", role="cache")}
    known = {"a": "http://a:1", "b": "http://b:1", "c": "http://c:1"}
    change = diff(self_id="me", role="queue", static={}, discovered=known, listed=listed)
    assert change == Diff(added={"a": "http://a:2"}, gone=("b", "c"))


def test_malformed_entries_are_skipped() -> None:
    raw = {
        "good": json.dumps({"role": "queue", "url": "http://g:1", "incarnation": 3}),
        "no-url": json.dumps({"role": "queue", "incarnation": 3}),
        "bad url": json.dumps({"role": "queue", "url": "http://x:1", "incarnation": 3}),
        "ftp": json.dumps({"role": "queue", "url": "ftp://x:1", "incarnation": 3}),
        "junk": "{not json",
    }
    assert parse_entries(raw) == {"good": Entry("good", "queue", "http://g:1", 3)}


def discovery_loop(
    client: aioredis.Redis,
    peers: dict[str, str],
    *,
    static: dict[str, str] | None = None,
    on_change: Callable[[Diff], None] = lambda change: None,
) -> Discovery:
    """The loop of node `me` (role queue) over `client`, keeping `peers` up to date."""
    return Discovery(
        Registry(client, "t:nodes", entry("me", "http://me:1"), ttl_ms=60_000),
        self_id="me",
        role="queue",
        static=static or {},
        peers=peers,
        interval_ms=50,
        ttl_ms=60_000,
        on_change=on_change,
        log=LOG,
    )


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    await client.delete("t:nodes", "t:nodes:expiry")
    yield client
    await client.delete("t:nodes", "t:nodes:expiry")
    await client.aclose()


async def test_registry_lists_every_node_and_forgets_silent_and_withdrawn_ones(
    redis: aioredis.Redis,
) -> None:
    a = Registry(redis, "t:nodes", entry("a", "http://a:1"), ttl_ms=300)
    b = Registry(redis, "t:nodes", entry("b", "http://b:1"), ttl_ms=60_000)
    await a.announce()
    assert set(await b.announce()) == {"a", "b"}
    await asyncio.sleep(0.4)  # a's entry is older than its TTL: the next announce drops it
    assert set(await b.announce()) == {"b"}
    await a.announce()
    await a.withdraw()
    assert set(await b.announce()) == {"b"}


async def test_the_loop_keeps_the_peer_map_in_step_and_keeps_configured_peers(
    redis: aioredis.Redis,
) -> None:
    peers = {"p": "http://proxy:9"}
    seen: list[Diff] = []
    loop = discovery_loop(redis, peers, static=dict(peers), on_change=seen.append)
    other = Registry(redis, "t:nodes", entry("n4", "http://n4:1"), ttl_ms=60_000)
    configured = Registry(redis, "t:nodes", entry("p", "http://p-direct:1"), ttl_ms=60_000)
    await other.announce()
    await configured.announce()
    await loop.round()
    assert peers == {"p": "http://proxy:9", "n4": "http://n4:1"}
    await other.withdraw()
    await configured.withdraw()
    await loop.round()
    assert peers == {"p": "http://proxy:9"}
    assert seen == [Diff(added={"n4": "http://n4:1"}, gone=()), Diff(added={}, gone=("n4",))]


async def test_a_peer_that_introduced_itself_is_kept_until_the_registry_lists_it(
    redis: aioredis.Redis,
) -> None:
    peers: dict[str, str] = {}
    loop = discovery_loop(redis, peers)
    assert loop.learn("n5", "http://n5:1") is True
    assert loop.learn("n5", "http://n5:1") is False
    await loop.round()  # n5 has not announced itself yet: it stays
    assert peers == {"n5": "http://n5:1"}
    await Registry(redis, "t:nodes", entry("n5", "http://n5:1"), ttl_ms=60_000).announce()
    await loop.round()
    await redis.hdel("t:nodes", "n5")
    await loop.round()  # listed once, then gone: it leaves like any discovered peer
    assert peers == {}


async def test_redis_down_costs_a_round_not_the_node() -> None:
    client = aioredis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    peers = {"p": "http://p:1"}
    loop = discovery_loop(client, peers, static=dict(peers))
    await loop.round()
    assert peers == {"p": "http://p:1"}
    await client.aclose()


async def test_a_peer_that_left_the_registry_is_not_learned_back_from_a_late_heartbeat(
    redis: aioredis.Redis,
) -> None:
    # A node that stops gracefully withdraws, then drains while still beating its peers:
    # its last heartbeats must not put it back.
    peers: dict[str, str] = {}
    seen: list[Diff] = []
    loop = discovery_loop(redis, peers, on_change=seen.append)
    leaver = Registry(redis, "t:nodes", entry("n4", "http://n4:1"), ttl_ms=60_000)
    await leaver.announce()
    await loop.round()
    await leaver.withdraw()
    await loop.round()
    assert peers == {}
    assert loop.learn("n4", "http://n4:1") is False  # a late heartbeat of the leaver
    assert peers == {}
    assert seen == [Diff(added={"n4": "http://n4:1"}, gone=()), Diff(added={}, gone=("n4",))]
    # Started again, it announces itself first: the registry brings it back.
    await leaver.announce()
    await loop.round()
    assert peers == {"n4": "http://n4:1"}
    await loop.round()
    assert loop.learn("n5", "http://n5:1") is True  # strangers still introduce themselves
