"""SIGSTOP / SIGCONT: a frozen node is routed around and rejoins without disruption."""

from __future__ import annotations

import asyncio

import pytest
from lock_it_harness import LockCluster, Reply

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# How long a rejoined node is watched for disrupting the leader.
OBSERVE_S = 3.0


def _token(reply: Reply) -> int:
    assert reply.status == 200 and reply.field("granted") is True, reply
    return int(reply.field("token"))


async def _leader_stays(cluster: LockCluster, leader: str, term: int, seconds: float) -> None:
    """Fail if, over `seconds`, any node reports another leader or a newer term."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        for node, s in (await cluster.statuses()).items():
            if s["state"] == "leader" or s["term"] != term:
                assert (node, s["term"]) == (leader, term), f"{node} disrupted: {s}"
        await asyncio.sleep(0.1)


async def test_paused_follower_is_routed_around_and_rejoins(cluster3: LockCluster) -> None:
    leader, term = await cluster3.stable_leader()
    follower, other = (n for n in cluster3.ids if n != leader)
    cluster3.pause(follower)
    tokens = [_token(await cluster3.acquire(other, f"pf-{i}", "owner")) for i in range(10)]
    assert (await cluster3.acquire(leader, "pf-0", "intruder")).status == 423
    await asyncio.sleep(1.0)  # well past an election timeout for the frozen node
    cluster3.resume(follower)
    converged = await cluster3.wait_converged(timeout_s=15)
    assert converged[follower]["last_applied"] >= tokens[-1]
    await _leader_stays(cluster3, leader, term, OBSERVE_S)


async def test_paused_leader_is_replaced_and_steps_down(cluster3: LockCluster) -> None:
    old, term = await cluster3.stable_leader()
    via = next(n for n in cluster3.ids if n != old)
    held = _token(await cluster3.acquire(via, "pl-held", "alice"))

    cluster3.pause(old)
    # A request parked on the frozen leader: it must never turn into a second grant.
    parked = asyncio.create_task(cluster3.acquire(old, "pl-race", "parked", timeout_s=30))
    new, new_term = await cluster3.stable_leader(timeout_s=15)
    assert new != old and new_term > term
    winner = _token(await cluster3.acquire(via, "pl-race", "winner"))
    assert winner > held
    assert (await cluster3.acquire(via, "pl-held", "bob")).status == 423

    cluster3.resume(old)
    late = await parked
    assert late.status != 200, f"frozen ex-leader granted a held lock: {late}"
    converged = await cluster3.wait_converged(timeout_s=15)
    assert converged[old]["state"] == "follower"
    final_leader, final_term = await cluster3.stable_leader()
    await _leader_stays(cluster3, final_leader, final_term, OBSERVE_S)
    assert final_leader == new, "the rejoined node deposed the new leader"
    for node in cluster3.ids:
        reply = await cluster3.get_lock(node, "pl-race")
        assert [(h["owner"], h["token"]) for h in reply.field("holders")] == [("winner", winner)]
        reply = await cluster3.get_lock(node, "pl-held")
        assert [(h["owner"], h["token"]) for h in reply.field("holders")] == [("alice", held)]
