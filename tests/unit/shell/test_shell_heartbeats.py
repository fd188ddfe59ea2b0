"""Heartbeats: strangers are refused, peers are heard, a silent peer leaves the ring."""

from __future__ import annotations

import pytest

from distcluster_worker.membership import Changes
from distcluster_worker.shell.cluster_view import ClusterView
from distcluster_worker.shell.errors import ApiError
from distcluster_worker.shell.heartbeats import Heartbeat, Heartbeats, loop_ms
from distcluster_worker.shell.rpc import RpcClient


def _beats(view: ClusterView, seen: list[Changes], rpc: RpcClient | None = None) -> Heartbeats:
    client = rpc or RpcClient(200, 0)
    return Heartbeats(
        node_id="node1",
        peer_urls={"node2": "http://127.0.0.1:9", "node3": "http://127.0.0.1:9"},
        rpc=lambda: client,
        view=view,
        path="/ring/heartbeat",
        interval_ms=100,
        incarnation=42,
        on_changes=seen.append,
    )


def _view() -> ClusterView:
    return ClusterView(
        "node1", ["node2", "node3"], vnodes=16, suspect_after_ms=100, dead_after_ms=200
    )


async def test_a_stranger_is_refused() -> None:
    beats = _beats(_view(), [])
    with pytest.raises(ApiError) as info:
        beats.receive(Heartbeat(node_id="node9", incarnation=1))
    assert info.value.status == 403


async def test_a_peer_is_answered_with_our_id_and_incarnation() -> None:
    view = _view()
    beats = _beats(view, [])
    assert beats.receive(Heartbeat(node_id="node2", incarnation=7)) == {
        "node_id": "node1",
        "incarnation": 42,
    }
    assert view.membership.state("node2").value == "alive"


async def test_an_unreachable_peer_leaves_the_ring_after_the_dead_bound() -> None:
    view, seen, rpc = _view(), [], RpcClient(200, 0)
    beats = _beats(view, seen, rpc)
    start = loop_ms()
    view.tick(start)
    try:
        await beats.beat("node2", "http://127.0.0.1:9")  # nothing listens on port 9
    finally:
        await rpc.close()
    changes = view.tick(start + 250)
    assert "node2" in changes.left
    assert "node2" not in view.ring.members


async def test_a_stranger_that_gives_its_url_is_learned_when_discovery_is_on() -> None:
    view, learned = _view(), []

    def learn(node_id: str, url: str) -> None:
        learned.append((node_id, url))
        peers[node_id] = url
        view.add(node_id, loop_ms())

    peers = {"node2": "http://127.0.0.1:9"}
    beats = Heartbeats(
        node_id="node1",
        peer_urls=peers,
        rpc=lambda: RpcClient(200, 0),
        view=view,
        path="/ring/heartbeat",
        interval_ms=100,
        incarnation=42,
        on_changes=lambda changes: None,
        url="http://n1:1",
        learn=learn,
    )
    answer = beats.receive(Heartbeat(node_id="node9", incarnation=1, url="http://n9:1"))
    assert answer == {"node_id": "node1", "incarnation": 42, "url": "http://n1:1"}
    assert learned == [("node9", "http://n9:1")]
    assert "node9" in view.ring.members
    with pytest.raises(ApiError):  # no URL, no introduction
        beats.receive(Heartbeat(node_id="node8", incarnation=1))
