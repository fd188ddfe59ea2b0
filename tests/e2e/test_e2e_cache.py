"""cache under docker compose: a write anywhere is seen everywhere, and a node cut off from
the others stops serving the value it held, on a real Docker engine."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from compose_harness import NODES, ComposeCluster, wait_for
from role_clients import put

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def line_state(cluster: ComposeCluster, node: str, key: str) -> str | None:
    """The MESI state of ``key`` in ``node``'s memory (None when it holds no line)."""
    reply = cluster.get(node, "/cache/lines")
    assert reply.status == 200, reply.body
    states = [line["state"] for line in reply.body["lines"] if line["key"] == key]
    return states[0] if states else None


def test_coherence_across_nodes_and_a_cut(compose_cluster: Callable[[str], ComposeCluster]) -> None:
    cluster = compose_cluster("cache")

    # A PUT via node1 is read via node3; both then hold the line shared.
    put(cluster, "node1", "user:42", "ada-v1")
    read = cluster.get("node3", "/cache/user:42")
    assert read.status == 200, read.body
    assert read.body["value"] == "ada-v1"
    assert read.body["state"] == "S"
    assert line_state(cluster, "node1", "user:42") == "S"
    assert line_state(cluster, "node3", "user:42") == "S"

    # A PUT via node2 invalidates the other copies: no node serves the old value.
    put(cluster, "node2", "user:42", "ada-v2")
    assert line_state(cluster, "node1", "user:42") in (None, "I")
    assert line_state(cluster, "node3", "user:42") in (None, "I")
    for node in NODES:
        reply = cluster.get(node, "/cache/user:42")
        assert reply.status == 200, reply.body
        assert reply.body["value"] == "ada-v2"

    # node3 holds a copy, then is cut off; a write on the others completes (after node3's
    # lease ran out at the latest), and node3 never serves the value it held again.
    assert cluster.get("node3", "/cache/user:42").body["state"] == "S"
    cluster.disconnect("node3")
    put(cluster, "node1", "user:42", "ada-v3")
    assert cluster.get("node2", "/cache/user:42").body["value"] == "ada-v3"
    stale = cluster.call_inside("node3", "GET", "/cache/user:42")
    assert stale.status != 200 or stale.body["value"] != "ada-v2", stale.body
    assert stale.status in (200, 503), stale.body

    # Reconnected, node3 reads the latest value again.
    cluster.reconnect("node3")
    wait_for(
        "node3 serves the latest value",
        lambda: cluster.get("node3", "/cache/user:42").body.get("value") == "ada-v3",
        30,
    )

    # docker stop: the node drains and exits 0 on SIGTERM as PID 1 (137 would mean the
    # engine had to kill it).
    assert cluster.stop("node2") == 0
