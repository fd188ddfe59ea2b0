"""queue under docker compose: every acknowledged publish is consumed, across the death of
the topic's owner and a restart of Redis (AOF), on a real Docker engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from compose_harness import NODES, ComposeCluster, E2EError
from role_clients import drain, publish

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def topic_not_owned_by(cluster: ComposeCluster, node: str) -> tuple[str, str]:
    """A topic whose owner is another node, so publishing through ``node`` forwards."""
    for n in range(100):
        topic = f"orders-{n}"
        owner = cluster.get(node, f"/ring?topic={topic}").field("owner")
        if owner != node:
            return topic, str(owner)
    raise E2EError(f"{node} owns every topic tried")


def test_no_acknowledged_message_lost(compose_cluster: Callable[[str], ComposeCluster]) -> None:
    cluster = compose_cluster("queue")
    topic, owner = topic_not_owned_by(cluster, "node2")
    published: dict[str, Any] = {}

    def send(batch: int, size: int) -> None:
        bodies = [{"batch": batch, "n": n} for n in range(size)]
        ids = publish(cluster, "node2", topic, bodies, key=f"batch-{batch}")["ids"]
        assert len(ids) == size
        published.update(zip(ids, bodies, strict=True))

    # Published through node2, which forwards to the owner.
    for batch in range(10):
        send(batch, 20)

    # The owner dies: node2 serves the topic itself (the data is in Redis); no publish fails.
    cluster.kill(owner)
    for batch in range(10, 15):
        send(batch, 20)

    # Redis restarts (AOF, fsync every second, clean shutdown on SIGTERM): nothing is lost.
    cluster.restart("redis")
    cluster.wait_healthy("redis")
    for batch in range(15, 20):
        send(batch, 20)

    survivors = tuple(node for node in NODES if node != owner)
    seen = drain(cluster, survivors, topic, set(published))
    for message_id, body in published.items():
        assert seen[message_id] == body
    # Everything consumed was acked: nothing is left pending in the group.
    stats = cluster.get(survivors[0], f"/queue/{topic}/stats")
    assert stats.status == 200, stats.body
    assert stats.body["length"] >= len(published)
    (group,) = [g for g in stats.body["groups"] if g["name"] == "e2e"]
    assert group["pending"] == 0
