"""Heartbeats: strangers are refused, peers are heard, a silent peer leaves the ring."""

from __future__ import annotations

import pytest

from distcluster_worker.membership import Changes
from distcluster_worker.shell.cluster_view import ClusterView
from distcluster_worker.shell.errors import ApiError
from distcluster_worker.shell.heartbeats import Heartbeats, loop_ms
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
        beats.receive("node9", 1)
    assert info.value.status == 403


async def test_a_peer_is_answered_with_our_id_and_incarnation() -> None:
    view = _view()
    beats = _beats(view, [])
    assert beats.receive("node2", 7) == {"node_id": "node1", "incarnation": 42}
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
