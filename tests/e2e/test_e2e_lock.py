"""lock_manager under docker compose: locks survive the leader's death and a cut-off node
grants nothing, on a real Docker engine through the published ports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from compose_harness import NODES, ComposeCluster, E2EError, wait_for
from role_clients import leader_among, raft_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def acquire(cluster: ComposeCluster, node: str, resource: str, owner: str) -> dict[str, Any]:
    body = {"resource": resource, "owner": owner, "mode": "exclusive", "ttl_ms": 120_000}
    reply = cluster.post(node, "/lock/acquire", body)
    if reply.status != 200:
        raise E2EError(f"acquire {resource} via {node}: {reply.status} {reply.body}")
    return dict(reply.body)


def holder_tokens(cluster: ComposeCluster, node: str, resource: str) -> list[tuple[str, int]]:
    reply = cluster.get(node, f"/lock/{resource}")
    assert reply.status == 200, reply.body
    return [(h["owner"], h["token"]) for h in reply.body["holders"]]


def test_locks_survive_leader_kill_and_partition(
    compose_cluster: Callable[[str], ComposeCluster],
) -> None:
    cluster = compose_cluster("lock_manager")
    leader = wait_for("a leader", lambda: leader_among(cluster, NODES), 30)

    # Locks taken through every node (followers forward to the leader).
    held = {f"res-{node}": acquire(cluster, node, f"res-{node}", f"owner-{node}") for node in NODES}
    tokens = [grant["token"] for grant in held.values()]
    assert len(set(tokens)) == 3

    # The leader dies: one of the two others takes over, and every lock is still held
    # with its token; a competing acquire is refused.
    cluster.kill(leader)
    survivors = tuple(node for node in NODES if node != leader)
    new_leader = wait_for("a new leader", lambda: leader_among(cluster, survivors), 30)
    assert new_leader != leader
    for resource, grant in held.items():
        assert holder_tokens(cluster, survivors[0], resource) == [(grant["owner"], grant["token"])]
    refused = cluster.post(
        survivors[1],
        "/lock/acquire",
        {"resource": "res-node1", "owner": "intruder", "mode": "exclusive", "wait_ms": 0},
    )
    assert refused.status == 423, refused.body
    after_failover = acquire(cluster, survivors[1], "res-after-failover", "owner-x")
    assert after_failover["token"] > max(tokens)

    # The killed node comes back and catches up with everything committed meanwhile.
    cluster.start(leader)
    cluster.wait_healthy(leader)
    commit = wait_for("leader status", lambda: raft_status(cluster, new_leader), 10)["commit_index"]
    wait_for(
        f"{leader} catches up",
        lambda: (raft_status(cluster, leader) or {}).get("last_applied", -1) >= commit,
        30,
    )

    # A node cut off from the network grants nothing; the other two go on granting.
    cut = new_leader  # the hardest case: the leader itself is cut off
    cluster.disconnect(cut)
    others = tuple(node for node in NODES if node != cut)
    wait_for("a leader on the majority side", lambda: leader_among(cluster, others), 30)
    on_majority = acquire(cluster, others[0], "res-majority", "owner-majority")
    assert on_majority["token"] > after_failover["token"]
    on_minority = cluster.call_inside(
        cut,
        "POST",
        "/lock/acquire",
        {
            "resource": "res-minority",
            "owner": "owner-minority",
            "mode": "exclusive",
            "ttl_ms": 60_000,
            "wait_ms": 1_000,
        },
    )
    assert on_minority.status == 503, on_minority.body
    assert on_minority.field("error")["code"] == "unavailable"

    # Healed, the cut node follows the majority and the minority's request left no trace.
    cluster.reconnect(cut)
    wait_for("one leader again", lambda: leader_among(cluster, NODES), 30)
    assert holder_tokens(cluster, cut, "res-minority") == []
    assert holder_tokens(cluster, cut, "res-majority") == [("owner-majority", on_majority["token"])]
