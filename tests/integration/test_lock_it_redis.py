"""Redis restarts with AOF (appendfsync everysec): locks and Raft state survive."""

from __future__ import annotations

import asyncio

import pytest
from lock_it_harness import LockCluster, Reply, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]


def _token(reply: Reply) -> int:
    assert reply.status == 200 and reply.field("granted") is True, reply
    return int(reply.field("token"))


async def _holders(cluster: LockCluster, node: str, resource: str) -> list[tuple[str, int]]:
    reply = await cluster.get_lock(node, resource)
    assert reply.status == 200, reply
    return [(h["owner"], h["token"]) for h in reply.field("holders")]


async def _ok_acquire(cluster: LockCluster, node: str, resource: str, owner: str) -> Reply:
    """Acquire, retrying 503s while the cluster reconnects to Redis."""
    return await wait_for(
        lambda: cluster.acquire(node, resource, owner, timeout_s=10),
        lambda r: r.status != 503,
        30,
        f"{node} to serve again",
        interval_s=0.2,
    )


async def test_redis_restart_keeps_locks_and_nodes_recover_from_it(
    cluster3: LockCluster,
) -> None:
    leader, _ = await cluster3.stable_leader()
    held = {
        f"aof-{i}": _token(await cluster3.acquire(leader, f"aof-{i}", "keeper")) for i in range(5)
    }
    before = await cluster3.wait_converged()
    await asyncio.sleep(1.5)  # past one everysec fsync, even for a crash-like stop

    await asyncio.to_thread(cluster3.redis.restart)
    after_redis = _token(await _ok_acquire(cluster3, cluster3.ids[0], "aof-after", "later"))
    assert after_redis > max(held.values())
    for node in cluster3.ids:
        for resource, token in held.items():
            assert await _holders(cluster3, node, resource) == [("keeper", token)]

    # Now every node dies at once: only Redis remembers the log and the hard state.
    for node in cluster3.ids:
        cluster3.kill(node)
    for node in cluster3.ids:
        await cluster3.restart(node)
    restarted = await cluster3.wait_converged(timeout_s=30)
    commit = before[leader]["commit_index"]
    assert all(s["last_index"] >= commit for s in restarted.values()), restarted
    assert all(s["term"] >= before[leader]["term"] for s in restarted.values())
    for node in cluster3.ids:
        for resource, token in held.items():
            assert await _holders(cluster3, node, resource) == [("keeper", token)]
        assert await _holders(cluster3, node, "aof-after") == [("later", after_redis)]
        assert (await cluster3.acquire(node, "aof-0", "intruder")).status == 423
    fresh = _token(await cluster3.acquire(cluster3.ids[1], "aof-fresh", "new"))
    assert fresh > after_redis


async def test_redis_down_gives_errors_not_grants_or_crashes(cluster3: LockCluster) -> None:
    leader, _ = await cluster3.stable_leader()
    await asyncio.to_thread(cluster3.redis.stop)
    try:
        reply = await cluster3.acquire(leader, "no-redis", "owner", timeout_s=15)
        assert reply.status in (500, 503), reply
        assert reply.code is not None, reply
    finally:
        await asyncio.to_thread(cluster3.redis.start)
    token = _token(await _ok_acquire(cluster3, leader, "no-redis", "owner"))
    assert await _holders(cluster3, cluster3.ids[-1], "no-redis") == [("owner", token)]
    for node in cluster3.ids:
        assert (await cluster3.call(node, "GET", "/health")).status == 200


async def test_redis_sigkill_after_an_fsync_window_loses_nothing(cluster3: LockCluster) -> None:
    """everysec may lose the last second of writes on a crash, not older ones."""
    leader, _ = await cluster3.stable_leader()
    held = {
        f"crash-{i}": _token(await cluster3.acquire(leader, f"crash-{i}", "k")) for i in range(3)
    }
    await cluster3.wait_converged()
    await asyncio.sleep(2.0)
    await asyncio.to_thread(cluster3.redis.stop, kill=True)
    await asyncio.to_thread(cluster3.redis.start)
    for node in cluster3.ids:
        cluster3.kill(node)
    for node in cluster3.ids:
        await cluster3.restart(node)
    await cluster3.wait_converged(timeout_s=30)
    for node in cluster3.ids:
        for resource, token in held.items():
            assert await _holders(cluster3, node, resource) == [("k", token)]
