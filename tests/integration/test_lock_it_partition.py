"""Partitions through the link proxies: a minority grants nothing, the majority goes on."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from lock_it_harness import BOUND_SLACK_S, REQUEST_TIMEOUT_S, LockCluster, Reply

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _token(reply: Reply) -> int:
    assert reply.status == 200 and reply.field("granted") is True, reply
    return int(reply.field("token"))


async def _timed_acquire(
    cluster: LockCluster, node: str, resource: str, owner: str
) -> tuple[Reply | None, float]:
    """An acquire and how long it took; None when the node dropped the connection."""
    start = time.monotonic()
    try:
        reply: Reply | None = await cluster.acquire(node, resource, owner, timeout_s=30)
    except aiohttp.ClientError:
        reply = None
    return reply, time.monotonic() - start


async def _holder_tokens(cluster: LockCluster, node: str, resource: str) -> list[tuple[str, int]]:
    reply = await cluster.get_lock(node, resource)
    assert reply.status == 200, reply
    return [(h["owner"], h["token"]) for h in reply.field("holders")]


async def test_isolated_leader_grants_nothing_and_majority_goes_on(
    cluster3: LockCluster,
) -> None:
    old, term = await cluster3.stable_leader()
    majority = [n for n in cluster3.ids if n != old]
    cluster3.mesh.isolate(old)

    # Fire at the minority at once (the old leader may still think it leads).
    minority_calls = [
        asyncio.create_task(_timed_acquire(cluster3, old, f"part-{i}", "minority"))
        for i in range(3)
    ]
    new, new_term = await cluster3.stable_leader(majority, timeout_s=15)
    assert new != old and new_term > term
    granted = {
        f"part-{i}": _token(await cluster3.acquire(majority[i % 2], f"part-{i}", "major"))
        for i in range(3)
    }

    for reply, elapsed_s in await asyncio.gather(*minority_calls):
        assert reply is None or reply.status != 200, f"minority granted: {reply}"
        assert reply is None or reply.status in (503, 423), reply
        assert elapsed_s <= REQUEST_TIMEOUT_S + BOUND_SLACK_S, f"answered after {elapsed_s:.1f}s"
    late, elapsed_s = await _timed_acquire(cluster3, old, "part-late", "minority")
    assert late is not None and late.status == 503 and late.code == "unavailable", late
    assert elapsed_s <= REQUEST_TIMEOUT_S + BOUND_SLACK_S

    cluster3.mesh.heal_all()
    converged = await cluster3.wait_converged(timeout_s=20)
    assert len({s["commit_index"] for s in converged.values()}) == 1
    for node in cluster3.ids:
        for resource, token in granted.items():
            assert await _holder_tokens(cluster3, node, resource) == [("major", token)]
        assert await _holder_tokens(cluster3, node, "part-late") == []


async def test_one_way_cut_from_leader_keeps_one_leader_per_term(
    cluster3: LockCluster,
) -> None:
    """The leader cannot reach one follower, which can still reach the leader."""
    leader, _ = await cluster3.stable_leader()
    deaf, other = (n for n in cluster3.ids if n != leader)
    cluster3.mesh.cut(leader, deaf, blackhole=False)

    seen: dict[int, set[str]] = {}
    tokens: list[int] = []
    deadline = time.monotonic() + 4.0
    i = 0
    while time.monotonic() < deadline:
        for node, s in (await cluster3.statuses()).items():
            if s["state"] == "leader":
                seen.setdefault(s["term"], set()).add(node)
        reply = await cluster3.acquire(other, f"asym-{i}", "owner", timeout_s=10)
        if reply.status == 200:
            tokens.append(_token(reply))
        else:
            assert reply.status == 503, reply
        i += 1
        await asyncio.sleep(0.05)
    assert all(len(nodes) == 1 for nodes in seen.values()), f"two leaders in a term: {seen}"
    assert tokens, "the connected majority never granted during a one-way cut"

    cluster3.mesh.heal_all()
    converged = await cluster3.wait_converged(timeout_s=20)
    assert converged[deaf]["last_applied"] >= max(tokens)


async def test_follower_cut_both_ways_from_leader_only(cluster3: LockCluster) -> None:
    """A partial partition: F loses the leader but still reaches the third node."""
    leader, _ = await cluster3.stable_leader()
    cut_off, bridge = (n for n in cluster3.ids if n != leader)
    cluster3.mesh.cut(leader, cut_off)
    cluster3.mesh.cut(cut_off, leader)
    assert cluster3.mesh.links[(leader, bridge)].state == "open"
    assert cluster3.mesh.links[(cut_off, leader)].state != "open"

    granted: list[tuple[str, int]] = []
    for i in range(10):
        reply = await cluster3.acquire(bridge, "partial", f"o{i}", wait_ms=3000, ttl_ms=30000)
        if reply.status == 200:
            token = _token(reply)
            granted.append((f"o{i}", token))
            assert (await cluster3.release(bridge, "partial", f"o{i}", token)).status == 200
        await asyncio.sleep(0.2)
    assert granted, "no grant while only one link pair was cut"
    tokens = [t for _, t in granted]
    assert tokens == sorted(set(tokens))

    cluster3.mesh.heal_all()
    await cluster3.wait_converged(timeout_s=20)
