"""Membership changes through the driver: learners get links, join, catch up, promote,
removal drops links; the admin logic (`MemberChanges`) maps the core's errors."""

from __future__ import annotations

import asyncio

import pytest
from test_lock_role_driver import IDS, Cluster, _acquire

from distcluster_worker.lock_role.members import (
    MemberChanges,
    check_member_id,
    members_view,
)
from distcluster_worker.lock_role.settings import load_lock_settings
from distcluster_worker.locks.outcomes import Granted
from distcluster_worker.shell.errors import ApiError


def _changes(cluster: Cluster, node_id: str) -> MemberChanges:
    return MemberChanges(cluster.drivers[node_id], commit_timeout_s=2.0, tick_s=0.005)


async def _committed(cluster: Cluster, leader: str) -> None:
    """Wait until the new leader committed an entry of its term (a lock command)."""
    outcome = await cluster.services[leader].execute(_acquire(f"warm-{leader}", "w", "warm"))
    assert isinstance(outcome, Granted)


def test_members_view_of_a_bootstrapped_node() -> None:
    c = Cluster()
    asyncio.run(_start_and_view(c))


async def _start_and_view(c: Cluster) -> None:
    await c.start("n1", 0)
    view = members_view(c.drivers["n1"].node)
    await c.stop("n1")
    assert view["voters"] == list(IDS)
    assert view["learners"] == []
    assert view["committed"] == {"voters": list(IDS), "learners": []}
    assert view["config_index"] == 0


async def test_add_join_node_then_remove_it(cluster: Cluster) -> None:
    leader = await cluster.leader()
    await _committed(cluster, leader)
    await cluster.start("n4", 9, join=True)
    assert members_view(cluster.drivers["n4"].node)["voters"] == []
    body = await _changes(cluster, leader).add("n4", catch_up_s=5.0)
    assert body == {"voters": ["n1", "n2", "n3", "n4"], "learners": []}
    assert "n4" in cluster.drivers[leader].linked_peers
    joined = cluster.drivers["n4"]
    async with asyncio.timeout(5):
        while joined.node.voters != ("n1", "n2", "n3", "n4"):
            await asyncio.sleep(0.01)
    outcome = await cluster.services[leader].execute(_acquire("after-join", "alice"))
    assert isinstance(outcome, Granted)
    await asyncio.wait_for(joined.wait_applied(outcome.token), 5)
    assert [h["owner"] for h in cluster.services["n4"].table.view("r")["holders"]] == ["alice"]
    body = await _changes(cluster, leader).remove("n4")
    assert body["voters"] == ["n1", "n2", "n3"]
    assert "n4" not in cluster.drivers[leader].linked_peers


async def test_errors_map_to_api_errors(cluster: Cluster) -> None:
    leader = await cluster.leader()
    await _committed(cluster, leader)
    changes = _changes(cluster, leader)
    with pytest.raises(ApiError) as missing:
        await changes.remove("n9")
    assert (missing.value.status, missing.value.code) == (404, "not_member")
    with pytest.raises(ApiError) as already:
        await changes.add(next(i for i in IDS if i != leader))
    assert (already.value.status, already.value.code) == (400, "invalid_conf_change")
    # n5 is never started: it never catches up.
    with pytest.raises(ApiError) as slow:
        await changes.add("n5", catch_up_s=0.2)
    assert (slow.value.status, slow.value.code) == (504, "timeout")
    assert cluster.drivers[leader].node.learners == ("n5",)


def test_check_member_id() -> None:
    peers = {"n4": "http://x"}
    assert check_member_id("n4", peers) == "n4"
    for bad, code in (
        (None, "invalid_conf_change"),
        ("a b", "invalid_conf_change"),
        ("n9", "unknown_peer"),
    ):
        with pytest.raises(ApiError) as err:
            check_member_id(bad, peers)
        assert err.value.code == code


def test_join_setting() -> None:
    assert load_lock_settings({}).join is False
    settings = load_lock_settings({"RAFT_JOIN": "true", "RAFT_INITIAL_VOTERS": "a,b"})
    assert settings.join is True
    assert settings.bootstrap_voters("c", ["a", "b", "d"]) == ("a", "b")
    assert load_lock_settings({}).bootstrap_voters("c", ["a"]) == ("a", "c")
