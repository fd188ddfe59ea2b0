"""A lock cluster grows with nodes nobody listed: discovery gives their addresses.

Three nodes run with the usual PEERS; node4 and node5 are started later with PEERS naming
the first three only and `RAFT_JOIN=auto` (not bootstrap voters, so they wait). The first
three learn their addresses from the registry in Redis, so `POST /raft/members` accepts
them; they catch up and vote, locks taken before are still held with their tokens, and
removing them again leaves a working 3-node cluster. A node that no registry entry or
PEERS names is still refused with 400 `unknown_peer`.
"""

from __future__ import annotations

import asyncio

import pytest
from lock_it_harness import ClusterFactory, LockCluster, free_port_block, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

FIRST = ["node1", "node2", "node3"]


async def _voters(cluster: LockCluster, node: str) -> list[str]:
    reply = await cluster.call(node, "GET", "/raft/members")
    return list(reply.body["voters"]) if reply.status == 200 else []


async def test_nodes_outside_peers_are_found_added_and_removed(
    lock_cluster: ClusterFactory,
) -> None:
    cluster = await lock_cluster(nodes=3, extra_env={"DISCOVERY_INTERVAL_MS": "200"})
    leader, _ = await cluster.stable_leader(FIRST)
    held = await cluster.acquire("node1", "disc-r", "before", ttl_ms=60_000)
    assert held.status == 200, held

    stranger = await cluster.call("node2", "POST", "/raft/members", {"id": "node9"})
    assert (stranger.status, stranger.code) == (400, "unknown_peer"), stranger

    port = free_port_block(2)
    joiner_env = {"RAFT_JOIN": "auto", "RAFT_INITIAL_VOTERS": ",".join(FIRST)}
    for offset, joiner in enumerate(("node4", "node5")):
        await asyncio.to_thread(
            cluster.cluster.add_node, joiner, port + offset, extra_env=joiner_env
        )
        # A joiner outside the voters waits: it never makes itself a cluster of its own.
        assert await _voters(cluster, joiner) == []
        follower = next(n for n in FIRST if n != leader)
        added = await wait_for(
            lambda j=joiner, f=follower: cluster.call(f, "POST", "/raft/members", {"id": j}),
            lambda r: r.status == 200,
            20.0,
            f"{joiner} added through {follower}",
        )
        assert joiner in added.body["voters"], added
    every = [*FIRST, "node4", "node5"]
    for node in every:
        await wait_for(
            lambda n=node: _voters(cluster, n), lambda v: v == every, 15.0, f"{node}: 5 voters"
        )
    # The joiners hold the lock table: the lock taken before they came is there, same token.
    seen = await cluster.get_lock("node5", "disc-r")
    assert seen.status == 200, seen
    assert seen.field("holders")[0]["token"] == held.field("token"), seen

    for joiner in ("node4", "node5"):
        reply = await cluster.call("node1", "DELETE", f"/raft/members/{joiner}")
        assert reply.status == 200, reply
        await asyncio.to_thread(cluster.cluster.remove_node, joiner)
    await cluster.stable_leader(FIRST)
    after = await cluster.acquire("node3", "disc-other", "after", ttl_ms=10_000)
    assert after.status == 200, after
    assert await _voters(cluster, "node2") == FIRST
