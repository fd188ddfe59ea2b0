"""Keys change homes when a node joins or leaves; the moments in between must not let two
homes of one key both grant, each staged here on real processes so it happens for sure.

* A node joins while cut off from the others: it takes keys on its own ring at once, but
  they do not hear of it, and the old homes go on serving those keys. It must grant
  nothing (its grace waits for every peer's acknowledgement, and it cannot take the
  keys' slots from their holders), or it would hand out copies the old home's writes
  never invalidate.
* A home leaves while writes to one of its keys are queued behind each other (each waits
  for a holder it cannot reach): the others see it leave the registry and the key's next
  home serves it after its grace. The leaving node must complete none of those writes,
  or one would land in Redis after the next home granted copies of an older value.

The check is the shared `History.stale_reads`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest
from cache_it_harness import CacheCluster, History, cache_cluster, ring_home, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FIRST = ["node1", "node2", "node3"]
# Failure detection far slower than the cuts below: no node is declared dead during one,
# so only the join or the leave moves keys.
ENV = {
    "DISCOVERY_INTERVAL_MS": "200",
    "CACHE_SUSPECT_AFTER_MS": "5000",
    "CACHE_DEAD_AFTER_MS": "10000",
}
CUT_S = 3.0  # longer than a home's grace (1.2 s), far shorter than CACHE_DEAD_AFTER_MS


def moving_key(prefix: str) -> tuple[str, str]:
    """A key whose home is node4 on the 4-node ring, and its home on the first three."""
    four = [*FIRST, "node4"]
    key = next(k for k in (f"{prefix}{i}" for i in range(1000)) if ring_home(four, k) == "node4")
    return key, ring_home(FIRST, key)


async def put(c: CacheCluster, history: History, node: str, key: str, value: str) -> int:
    reply = await c.put(node, key, value, timeout_s=20)
    if reply.status == 200:
        history.confirmed(key, value, int(reply.field("version")), time.monotonic())
    else:
        history.failed_puts += 1
    return reply.status


async def put_until_ok(
    c: CacheCluster, history: History, node: str, key: str, value: str, timeout_s: float = 20
) -> None:
    """PUT (a new value at each try) until one is answered 200, as a client retries 503s."""
    deadline = time.monotonic() + timeout_s
    for attempt in itertools.count():
        if await put(c, history, node, key, f"{value}.{attempt}") == 200:
            return
        assert time.monotonic() < deadline, f"no PUT of {key} answered 200 in {timeout_s}s"
        await asyncio.sleep(0.05)


async def read(c: CacheCluster, history: History, node: str, key: str) -> str | None:
    started = time.monotonic()
    reply = await c.get(node, key, timeout_s=20)
    history.read(node, key, started, time.monotonic(), reply.status, reply.field("value"))
    return reply.field("state") if reply.status == 200 else None


async def test_a_joining_node_grants_nothing_before_its_peers_heard_of_it(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path, ENV) as c:
        key, _ = moving_key("join")
        history = History()
        assert await put(c, history, "node1", key, "before") == 200
        # Every link of node4 is cut before it starts: it sees itself as the key's home,
        # the first three never hear of it and keep the key at its old home.
        await c.add_node("node4", proxied=True, cut=True)
        states: set[str | None] = set()
        n, until = 0, time.monotonic() + CUT_S
        while time.monotonic() < until:
            n += 1
            states.add(await read(c, history, "node4", key))  # node4 may keep a copy
            assert await put(c, history, "node2", key, f"cut-{n}") == 200  # the old home
            states.add(await read(c, history, "node4", key))
        c.mesh.heal_all()
        await c.wait_ring(30.0)
        for i in range(10):
            # The key's slot changes hands now (503 not_home until node4 holds it and its
            # grace is over): retry, as a client does.
            await put_until_ok(c, history, FIRST[i % 3], key, f"after-{i}")
            for node in c.ids:
                await read(c, history, node, key)
        stale = history.stale_reads()
        assert not stale, stale[:10]
        # While cut off it granted itself no copy: it cannot take the key's slot from the old
        # home (503 once it finds the holder unreachable), and the grace covered the rest.
        assert not states & {"M", "E", "S"}, states
        assert history.confirmed_writes() >= 12


async def test_a_leaving_home_completes_none_of_its_queued_writes(tmp_path: Path) -> None:
    async with cache_cluster(tmp_path, ENV) as c:
        key, next_home = moving_key("leave")
        history = History()
        await c.add_node("node4", proxied=True, env={"SHUTDOWN_GRACE_MS": "8000"})
        await c.wait_ring(30.0)
        # node2 holds the key in M, then node2 and node3 share it (node4 is its home).
        await wait_for(
            lambda: c.put("node2", key, "held"), lambda r: r.field("state") == "M", 20, "M"
        )
        await wait_for(lambda: c.get("node3", key), lambda r: r.field("state") == "S", 20, "S")
        # node4 can no longer reach the holders: each write waits out a holder's lease, and
        # the next one, queued behind it, the lease of the copy the first one granted.
        c.mesh.cut("node4", "node2")
        c.mesh.cut("node4", "node3")
        before = (await c.stats("node4"))["home_writes"]
        writers = ["node2", "node3", "node2", "node3"]
        queued = [
            asyncio.create_task(put(c, history, node, key, f"queued-{i}"))
            for i, node in enumerate(writers)
        ]
        await wait_for(
            lambda: c.stats("node4"),
            lambda s: s["home_writes"] >= before + len(writers),
            20,
            "every write queued at node4",
        )
        leaving = asyncio.create_task(c.remove_node("node4"))  # SIGTERM: it drains
        await c.wait_ring(30.0, members=FIRST)
        # The key's next home serves it once its grace is over; node1 keeps a copy.
        assert await put(c, history, "node1", key, "next") == 200
        await wait_for(
            lambda: read(c, history, "node1", key),
            lambda state: state in ("M", "E", "S"),
            20,
            "a copy at node1",
        )
        statuses = await asyncio.gather(*queued)
        await leaving
        for node in FIRST:
            await read(c, history, node, key)
        stale = history.stale_reads()
        assert not stale, (stale[:10], statuses, next_home)
