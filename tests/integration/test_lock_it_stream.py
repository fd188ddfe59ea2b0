"""The Raft stream transport between real processes, and the HTTP transport it replaced.

The other lock suites run with the default (`RAFT_TRANSPORT=stream`); these show what is
particular to it: Raft traffic really rides the streams, a link to a frozen peer is noticed
and redialled, a blackholed link is redialled after it heals, the endpoint refuses what is
not a peer's stream, and a cluster set to `http` still works over `/raft-append`.
"""

from __future__ import annotations

import pytest
from lock_it_harness import ClusterFactory, LockCluster, Reply, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STREAM = "distcluster_raft_stream_"


def _token(reply: Reply) -> int:
    assert reply.status == 200 and reply.field("granted") is True, reply
    return int(reply.field("token"))


async def _stream_metric(cluster: LockCluster, node: str, name: str, peer: str) -> float:
    value = await cluster.metric(node, STREAM + name, peer=peer)
    return value if value is not None else -1.0


async def _grants(cluster: LockCluster, node: str, prefix: str, count: int) -> list[int]:
    return [_token(await cluster.acquire(node, f"{prefix}-{i}", "owner")) for i in range(count)]


async def test_raft_traffic_rides_the_streams_not_http(cluster3: LockCluster) -> None:
    leader, _ = await cluster3.stable_leader()
    tokens = await _grants(cluster3, leader, "ride", 5)
    await cluster3.wait_converged()
    for follower in (n for n in cluster3.ids if n != leader):
        assert await _stream_metric(cluster3, leader, "frames_sent_total", follower) > 0
        assert await _stream_metric(cluster3, leader, "frames_received_total", follower) > 0
        assert await _stream_metric(cluster3, leader, "connected", follower) == 1.0
        posts = await cluster3.metric(
            follower, "distcluster_http_requests_total", route="/raft-append"
        )
        assert posts is None, f"{follower} served /raft-append {posts} times"
    assert tokens == sorted(tokens)


async def test_a_frozen_followers_stream_is_dropped_and_redialled(cluster3: LockCluster) -> None:
    leader, term = await cluster3.stable_leader()
    follower = next(n for n in cluster3.ids if n != leader)
    connects = await _stream_metric(cluster3, leader, "connects_total", follower)
    cluster3.pause(follower)
    await wait_for(
        lambda: _stream_metric(cluster3, leader, "connected", follower),
        lambda v: v == 0.0,
        15,
        f"{leader} to drop its stream to the frozen {follower}",
    )
    tokens = await _grants(cluster3, leader, "frozen", 3)  # the majority goes on meanwhile
    cluster3.resume(follower)
    await wait_for(
        lambda: _stream_metric(cluster3, leader, "connects_total", follower),
        lambda v: v > connects,
        15,
        f"{leader} to redial {follower}",
    )
    converged = await cluster3.wait_converged(timeout_s=15)
    assert converged[follower]["last_applied"] >= tokens[-1]
    assert await cluster3.stable_leader() == (leader, term)


async def test_a_blackholed_link_is_redialled_once_it_heals(cluster3: LockCluster) -> None:
    leader, _ = await cluster3.stable_leader()
    follower = next(n for n in cluster3.ids if n != leader)
    failures = await _stream_metric(cluster3, leader, "connect_failures_total", follower)
    cluster3.mesh.cut(leader, follower, blackhole=True)  # handshakes now hang, unanswered
    await wait_for(
        lambda: _stream_metric(cluster3, leader, "connect_failures_total", follower),
        lambda v: v > failures,
        15,
        f"a redial of {leader}->{follower} to time out in the blackhole",
    )
    tokens = await _grants(cluster3, leader, "hole", 3)
    cluster3.mesh.heal_all()
    await wait_for(
        lambda: _stream_metric(cluster3, leader, "connected", follower),
        lambda v: v == 1.0,
        15,
        f"{leader}->{follower} to reconnect",
    )
    converged = await cluster3.wait_converged(timeout_s=15)
    assert converged[follower]["last_applied"] >= tokens[-1]


async def test_the_stream_endpoint_refuses_strangers_and_plain_requests(
    cluster3: LockCluster,
) -> None:
    node = cluster3.ids[0]
    stranger = await cluster3.call(node, "GET", "/raft-stream?src=mallory")
    assert stranger.status == 403 and stranger.code == "forbidden", stranger
    plain = await cluster3.call(node, "GET", f"/raft-stream?src={cluster3.ids[1]}")
    assert plain.status == 400, plain  # a peer's id, but no WebSocket upgrade
    assert (await cluster3.call(node, "GET", "/health")).status == 200


async def test_a_cluster_set_to_http_replicates_over_raft_append(
    lock_cluster: ClusterFactory,
) -> None:
    cluster = await lock_cluster(nodes=3, extra_env={"RAFT_TRANSPORT": "http"})
    leader, _ = await cluster.stable_leader()
    tokens = await _grants(cluster, leader, "http", 5)
    converged = await cluster.wait_converged()
    for follower in (n for n in cluster.ids if n != leader):
        assert converged[follower]["last_applied"] >= tokens[-1]
        posts = await cluster.metric(
            follower, "distcluster_http_requests_total", route="/raft-append"
        )
        assert posts is not None and posts > 0
        assert await cluster.metric(leader, STREAM + "frames_sent_total", peer=follower) is None


async def test_a_follower_behind_the_leaders_snapshot_gets_it_over_the_stream(
    lock_cluster: ClusterFactory,
) -> None:
    cluster = await lock_cluster(nodes=3, extra_env={"RAFT_SNAPSHOT_ENTRIES": "20"})
    leader, _ = await cluster.stable_leader()
    follower = next(n for n in cluster.ids if n != leader)
    cluster.kill(follower)
    tokens = await _grants(cluster, leader, "snap", 100)  # past the leader's cap, 4 x 20
    snapshot_index = (await cluster.status(leader) or {}).get("snapshot_index", 0)
    assert snapshot_index > 0, "the leader never compacted"
    await cluster.restart(follower)
    converged = await cluster.wait_converged(timeout_s=20)
    assert converged[follower]["snapshot_index"] >= snapshot_index  # installed, not replayed
    assert converged[follower]["last_applied"] >= tokens[-1]
    # Its own lock table (not a forwarded read) holds what the leader's does.
    assert converged[follower]["lock_table"] == converged[leader]["lock_table"]
    assert converged[follower]["lock_table"]["holders"] >= 100
