"""SIGKILL of the leader while locks are held: failover keeps every lock, once."""

from __future__ import annotations

import time

import pytest
from lock_it_harness import LockCluster, Reply, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _token(reply: Reply) -> int:
    assert reply.status == 200 and reply.field("granted") is True, reply
    return int(reply.field("token"))


def _holders(reply: Reply) -> set[tuple[str, str, int]]:
    assert reply.status == 200, reply
    return {(h["owner"], h["mode"], h["token"]) for h in reply.field("holders")}


async def _hold_locks(cluster: LockCluster, via: str) -> dict[str, set[tuple[str, str, int]]]:
    held = {
        "crash-ex": {
            ("alice", "exclusive", _token(await cluster.acquire(via, "crash-ex", "alice")))
        },
        "crash-sh": set(),
    }
    for owner in ("bob", "carol"):
        token = _token(await cluster.acquire(via, "crash-sh", owner, mode="shared"))
        held["crash-sh"].add((owner, "shared", token))
    return held


async def test_leader_sigkill_keeps_locks_and_restarted_node_catches_up(
    cluster3: LockCluster,
) -> None:
    leader, term = await cluster3.stable_leader()
    follower = next(n for n in cluster3.ids if n != leader)
    held = await _hold_locks(cluster3, follower)

    killed_at = time.monotonic()
    cluster3.kill(leader)
    new_leader, new_term = await cluster3.stable_leader(timeout_s=15)
    failover_s = time.monotonic() - killed_at
    assert new_leader != leader and new_term > term
    assert failover_s < 10, f"failover took {failover_s:.1f}s"

    for node in cluster3.live_ids:
        for resource, holders in held.items():
            assert _holders(await cluster3.get_lock(node, resource)) == holders, (node, resource)
    # The exclusive lock is not granted twice, and a writer cannot join the readers.
    for node in cluster3.live_ids:
        assert (await cluster3.acquire(node, "crash-ex", "intruder")).status == 423
        assert (await cluster3.acquire(node, "crash-sh", "writer")).status == 423
    # New grants work and continue the token sequence.
    fresh = _token(await cluster3.acquire(follower, "crash-new", "dave"))
    assert fresh > max(t for hs in held.values() for _, _, t in hs)

    await cluster3.restart(leader)
    target = (await cluster3.statuses([new_leader]))[new_leader]["commit_index"]
    await wait_for(
        lambda: cluster3.status(leader),
        lambda s: s is not None and s["last_applied"] >= target,
        20,
        f"restarted {leader} to apply up to {target}",
    )
    await cluster3.wait_converged(timeout_s=20)
    for resource, holders in held.items():
        assert _holders(await cluster3.get_lock(leader, resource)) == holders
    assert (await cluster3.stable_leader())[0] == new_leader


async def test_killed_follower_restarts_and_catches_up(cluster3: LockCluster) -> None:
    leader, term = await cluster3.stable_leader()
    follower = next(n for n in cluster3.ids if n != leader)
    cluster3.kill(follower)
    tokens = [_token(await cluster3.acquire(leader, f"fk-{i}", "owner")) for i in range(20)]
    assert tokens == sorted(set(tokens))
    await cluster3.restart(follower)
    converged = await cluster3.wait_converged(timeout_s=20)
    assert converged[follower]["last_applied"] >= tokens[-1]
    assert (await cluster3.stable_leader()) == (leader, term)
