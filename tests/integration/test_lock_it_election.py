"""Leader election on a fresh cluster: one leader, one term, every node ready."""

from __future__ import annotations

import pytest
from lock_it_harness import ClusterFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_exactly_one_leader_and_all_agree(lock_cluster: ClusterFactory) -> None:
    cluster = await lock_cluster(nodes=3)
    leader, term = await cluster.stable_leader(timeout_s=15)
    found = await cluster.statuses()
    assert [n for n, s in found.items() if s["state"] == "leader"] == [leader]
    assert {s["leader_id"] for s in found.values()} == {leader}
    assert {s["term"] for s in found.values()} == {term}
    assert all(s["node_id"] == n for n, s in found.items())
    for node in cluster.ids:
        await cluster.wait_ready(node, timeout_s=10)


async def test_health_names_the_node_and_role(lock_cluster: ClusterFactory) -> None:
    cluster = await lock_cluster(nodes=3)
    pids = {cluster.cluster.nodes[n].pid for n in cluster.ids}
    for node in cluster.ids:
        reply = await cluster.call(node, "GET", "/health")
        assert reply.status == 200
        assert reply.body["status"] == "ok"
        assert reply.body["node_id"] == node
        assert reply.body["role"] == "lock_manager"
        assert reply.body["pid"] in pids


async def test_peer_traffic_goes_through_the_proxies(lock_cluster: ClusterFactory) -> None:
    """Without this, every partition test below would cut nothing."""
    cluster = await lock_cluster(nodes=3)
    leader, _ = await cluster.stable_leader()
    for (src, dst), proxy in cluster.mesh.links.items():
        if src == leader:
            assert proxy.stats.accepted >= 1, f"{src}->{dst} never used its proxy"
            assert proxy.stats.bytes_up > 0


async def test_metrics_cluster_and_openapi_answer(lock_cluster: ClusterFactory) -> None:
    cluster = await lock_cluster(nodes=3)
    leader, _ = await cluster.stable_leader()
    node = cluster.ids[0]
    metrics = await cluster.call(node, "GET", "/metrics")
    assert metrics.status == 200 and "distcluster_raft" in str(metrics.body), metrics
    # Lock commands are answered by the node's fast front, and counted all the same.
    body = {"resource": "counted", "owner": "o", "request_id": "counted-1"}
    assert (await cluster.call(leader, "POST", "/lock/acquire", body)).status == 200
    bad = await cluster.call(leader, "POST", "/lock/acquire", data="{")
    assert bad.status == 400 and bad.body["error"]["code"] == "bad_json", bad
    for status, wanted in (("200", 1.0), ("400", 1.0)):
        count = await cluster.metric(
            leader, "distcluster_http_requests_total", route="/lock/acquire", status=status
        )
        assert count == wanted, (status, count)
    info = await cluster.call(node, "GET", "/cluster")
    assert info.status == 200 and isinstance(info.body, dict), info
    assert info.body.get("node_id") == node
    spec = await cluster.call(node, "GET", "/openapi.json")
    assert spec.status == 200 and "/lock/acquire" in spec.body.get("paths", {}), spec
