"""Raft storage: the Redis adapter and its in-memory twin keep the same log."""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from distcluster_worker.lock_role.storage import InMemoryRaftStorage, LogPlan, RedisRaftStorage
from distcluster_worker.raft.confchange import Membership, encode_membership
from distcluster_worker.raft.messages import Entry, HardState, Snapshot
from distcluster_worker.raft.node import RaftConfig, RaftNode


def _entries(first: int, count: int, term: int) -> list[Entry]:
    return [Entry(term, i, "command", f"cmd-{term}-{i}") for i in range(first, first + count)]


def test_log_plan_truncates_conflicting_suffix() -> None:
    plan = LogPlan()
    plan.append(_entries(1, 5, 1))
    ops = plan.append(_entries(3, 2, 2))
    assert ops[0] == ("ltrim", 0, 1)
    assert (plan.start, plan.last) == (1, 4)


def test_log_plan_refuses_a_gap() -> None:
    plan = LogPlan()
    plan.append(_entries(1, 2, 1))
    with pytest.raises(ValueError, match="gap"):
        plan.append(_entries(4, 1, 1))


def test_log_plan_trim_head_moves_start() -> None:
    plan = LogPlan()
    plan.append(_entries(1, 10, 1))
    assert plan.trim_head(4) == [("ltrim", 4, -1), ("set_start", 5)]
    assert (plan.start, plan.last) == (5, 10)
    plan.trim_head(20)
    assert (plan.start, plan.length) == (21, 0)


async def _random_history(storages: list, seed: int) -> None:  # type: ignore[type-arg]
    rng = random.Random(seed)
    last, term, commit = 0, 1, 0
    for step in range(60):
        action = rng.random()
        if action < 0.6 or last == 0:
            first = rng.randint(max(commit + 1, last - 3), last + 1) if last else 1
            term += rng.random() < 0.3
            batch = _entries(first, rng.randint(1, 4), term)
            last = batch[-1].index
            hs = HardState(term, rng.choice([None, "node1", "node2"]), min(commit, last))
            for storage in storages:
                await storage.save(hs, batch)
        elif action < 0.8:
            commit = rng.randint(commit, last)
            snap = Snapshot(commit, term, f"state-{step}", ("node1", "node2", "node3"))
            for storage in storages:
                await storage.compact(snap)
        else:
            snap = Snapshot(last + 2, term, f"installed-{step}", ("node1",))
            kept = _entries(last + 3, 2, term)
            last, commit = last + 4, last + 2
            for storage in storages:
                await storage.save(HardState(term, None, commit), [], snap, kept)


@pytest.mark.parametrize("seed", range(5))
async def test_redis_storage_matches_in_memory_twin(redis_url: str, seed: int) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    key = f"test:{uuid.uuid4().hex}:raft:node1"
    redis_storage = RedisRaftStorage(client, key)
    twin = InMemoryRaftStorage()
    try:
        await _random_history([redis_storage, twin], seed)
        assert await RedisRaftStorage(client, key).load() == await twin.load()
    finally:
        await client.aclose()


async def test_restart_reads_back_hard_state_and_log(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    key = f"test:{uuid.uuid4().hex}:raft:node2"
    try:
        storage = RedisRaftStorage(client, key)
        await storage.save(HardState(3, "node1", 2), _entries(1, 3, 3))
        restored = await RedisRaftStorage(client, key).load()
        assert restored.hard_state == HardState(3, "node1", 2)
        assert [e.index for e in restored.entries] == [1, 2, 3]
        assert restored.snapshot is None
    finally:
        await client.aclose()


async def test_membership_survives_a_restart(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    key = f"test:{uuid.uuid4().hex}:raft:node3"
    members = Membership(("node1", "node2"), ("node3",))
    config = Entry(2, 3, "config", encode_membership(members))
    snap = Snapshot(2, 2, "state", ("node1", "node2"))
    try:
        storage = RedisRaftStorage(client, key)
        await storage.save(HardState(2, "node1", 3), [*_entries(1, 2, 2), config])
        await storage.compact(snap)
        restored = await RedisRaftStorage(client, key).load()
        assert (restored.snapshot, restored.entries) == (snap, [config])
        joined = RaftConfig(node_id="node3", voters=(), join=True)
        assert RaftNode(joined, random.Random(0), restored).membership == members
    finally:
        await client.aclose()


async def test_snapshot_written_before_learners_existed_still_loads(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    key = f"test:{uuid.uuid4().hex}:raft:node1"
    old = {"last_index": 4, "last_term": 2, "data": "state", "voters": ["node1", "node2"]}
    try:
        await client.set(f"{key}:snapshot", json.dumps(old))
        restored = await RedisRaftStorage(client, key).load()
        assert restored.snapshot == Snapshot(4, 2, "state", ("node1", "node2"), ())
    finally:
        await client.aclose()


async def test_only_a_plain_append_skips_the_transaction(redis_url: str) -> None:
    """A new term or vote, a truncation or a snapshot go in MULTI/EXEC; appends at the end
    with at most a new commit index go as a plain pipeline, and read back the same."""
    client = aioredis.from_url(redis_url, decode_responses=True)
    key = f"test:{uuid.uuid4().hex}:raft:node3"
    atomic: list[bool] = []
    storage = RedisRaftStorage(client, key)
    conn = storage._conn
    send = conn.send_packed_command

    async def spy(command, check_health=True):  # type: ignore[no-untyped-def]
        packed = b"".join(command)
        if key.encode() in packed:  # not the handshake of a new connection
            atomic.append(b"MULTI" in packed)
        await send(command, check_health)

    conn.send_packed_command = spy  # type: ignore[method-assign]
    try:
        await storage.save(HardState(1, "node1", 0), _entries(1, 2, 1))  # vote: atomic
        await storage.save(HardState(1, "node1", 2), _entries(3, 2, 1))  # commit only: plain
        await storage.save(None, _entries(5, 1, 1))  # entries only: plain
        await storage.save(HardState(2, None, 2), _entries(6, 1, 2))  # new term: atomic
        await storage.save(None, _entries(5, 1, 2))  # truncates 5..6: atomic
        assert atomic == [True, False, False, True, True]
        restored = await RedisRaftStorage(client, key).load()
        assert restored.hard_state == HardState(2, None, 2)
        assert [(e.index, e.term) for e in restored.entries] == [(i, 1) for i in range(1, 5)] + [
            (5, 2)
        ]
    finally:
        await storage.close()
        await client.aclose()


async def test_a_write_to_a_redis_that_stops_answering_fails_within_the_bound(
    redis_url: str, mute_redis_url: str
) -> None:
    """The storage bounds a whole write by the client's socket timeout itself (it takes
    redis-py's per-call timeouts off its own connection): a Redis that takes the write and
    never answers fails it instead of hanging the node; a Redis that answers is written."""
    client = aioredis.Redis.from_url(mute_redis_url, socket_timeout=0.2)
    storage = RedisRaftStorage(client, f"test:{uuid.uuid4().hex}")
    try:
        async with asyncio.timeout(5):
            with pytest.raises((TimeoutError, RedisTimeoutError)):
                await storage.save(HardState(1, "n1", 0), _entries(1, 2, 1))
    finally:
        await storage.close()
        await client.aclose()
    real = aioredis.Redis.from_url(redis_url, socket_timeout=0.2)
    storage = RedisRaftStorage(real, f"test:{uuid.uuid4().hex}")
    try:
        await storage.save(HardState(1, "n1", 0), _entries(1, 2, 1))
        assert (await storage.load()).entries == _entries(1, 2, 1)
    finally:
        await storage.close()
        await real.aclose()
