"""Raft membership through `/raft/members`: 3 -> 5 -> 3 voters under lock traffic.

Nodes 4 and 5 are listed in every PEERS from the start but left out of the bootstrap
voters (`RAFT_INITIAL_VOTERS`) and started with `RAFT_JOIN=true`; they are added one at a
time through a follower (so the request is forwarded), then two nodes are removed, one
of them the leader. Clients acquire and release throughout; the grant history must show
no double grant (the checker of `test_lock_it_concurrency`).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from lock_it_harness import ClusterFactory, LockCluster, wait_for
from test_lock_it_concurrency import Grant, _grant, check_history, now_ms

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

JOINERS = ("node4", "node5")
RESOURCES = ("m-a", "m-b")


async def _members(cluster: LockCluster, node: str) -> dict[str, Any]:
    reply = await cluster.call(node, "GET", "/raft/members")
    assert reply.status == 200, reply
    assert isinstance(reply.body, dict)
    return reply.body


async def _client(
    cluster: LockCluster, index: int, grants: list[Grant], stop: asyncio.Event, targets: list[str]
) -> int:
    """Acquire and release on a random node of `targets` (the test narrows it before it
    removes nodes) until `stop`."""
    rng = random.Random(index)
    served = 0
    round_no = 0
    while not stop.is_set():
        round_no += 1
        node = rng.choice(targets)
        resource = rng.choice(RESOURCES)
        owner = f"c{index}-{round_no}"
        requested = now_ms()
        reply = await cluster.acquire(
            node, resource, owner, ttl_ms=10000, wait_ms=2000, timeout_s=20
        )
        if reply.status != 200:
            # Refusals and a lost quorum during a change are allowed, not double grants.
            assert reply.status in (423, 503), reply
            continue
        grant = _grant(reply, resource, owner, "exclusive", requested)
        grants.append(grant)
        served += 1
        await asyncio.sleep(rng.uniform(0, 0.02))
        grant.released_ms = now_ms()
        released = await cluster.release(
            node,
            resource,
            owner,
            grant.token,
        )
        assert released.status in (200, 409, 503), released
    return served


async def _voters(cluster: LockCluster, node: str, expected: list[str]) -> None:
    await wait_for(
        lambda: _members(cluster, node),
        lambda m: m["voters"] == expected and m["committed"]["voters"] == expected,
        15.0,
        f"{node} sees voters {expected}",
    )


@pytest.mark.parametrize("transport", ["stream", "http"])
async def test_grow_to_five_and_shrink_to_three(
    lock_cluster: ClusterFactory, transport: str
) -> None:
    cluster = await lock_cluster(nodes=5, extra_env={"RAFT_TRANSPORT": transport}, joiners=JOINERS)
    leader, _ = await cluster.stable_leader(["node1", "node2", "node3"])
    view = await _members(cluster, "node1")
    assert view["voters"] == ["node1", "node2", "node3"], view
    assert view["leader_id"] == leader
    grants: list[Grant] = []
    stop = asyncio.Event()
    targets = ["node1", "node2", "node3"]
    clients = [asyncio.create_task(_client(cluster, i, grants, stop, targets)) for i in range(6)]
    try:
        voters = ["node1", "node2", "node3"]
        for joiner in JOINERS:
            await cluster.start_node(joiner)
            follower = next(n for n in ("node1", "node2", "node3") if n != leader)
            reply = await cluster.call(follower, "POST", "/raft/members", {"id": joiner})
            assert reply.status == 200, reply
            voters = sorted([*voters, joiner])
            assert reply.body["voters"] == voters, reply
            for node in voters:
                await _voters(cluster, node, voters)
        leader, _ = await cluster.stable_leader(voters)
        removed = [leader, next(n for n in voters if n != leader)]
        targets[:] = [n for n in voters if n not in removed]
        for node in removed:
            asker = next(n for n in voters if n not in removed)
            reply = await cluster.call(asker, "DELETE", f"/raft/members/{node}")
            assert reply.status == 200, reply
            voters = [n for n in voters if n != node]
            assert reply.body["voters"] == voters, reply
        for node in voters:
            await _voters(cluster, node, voters)
        gone = await cluster.call(voters[0], "DELETE", f"/raft/members/{removed[1]}")
        assert (gone.status, gone.code) == (404, "not_member"), gone
        await cluster.stable_leader(voters)
        served_before = len(grants)
        await wait_for(
            lambda: _count(grants),
            lambda n: n >= served_before + 10,
            30.0,
            "locks served by the 3 remaining voters",
        )
    finally:
        stop.set()
        served = await asyncio.gather(*clients, return_exceptions=True)
    for result in served:
        if isinstance(result, BaseException):
            raise result
    check_history(grants)


async def _count(grants: list[Grant]) -> int:
    return len(grants)
