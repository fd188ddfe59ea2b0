"""The Raft driver and lock service wired in-process: in-memory storage and transport.

These run the real asyncio shell (locks, sender tasks, proposal batching, ReadIndex)
without sockets or Redis, so they are fast and show the shell's own logic. Every test runs
over both transports: HTTP-style calls (`send`) and streams over memory pipes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass, field

import pytest

from distcluster_worker.lock_role.driver import (
    LEADER_COMPACTION_DEFER,
    Deliver,
    LinkFactory,
    RaftDriver,
    compaction_due,
)
from distcluster_worker.lock_role.frames import Backoff
from distcluster_worker.lock_role.service import LockService, QuorumUnavailableError
from distcluster_worker.lock_role.storage import InMemoryRaftStorage
from distcluster_worker.lock_role.stream import (
    FrameConn,
    InboundStream,
    MemoryConn,
    StreamLink,
    memory_pipe,
)
from distcluster_worker.locks.outcomes import Granted, Refused, Released
from distcluster_worker.raft.messages import AppendRequest, AppendResponse, Entry, Message
from distcluster_worker.raft.node import NotLeader, RaftConfig, RaftNode

IDS = ("n1", "n2", "n3")
LOG = logging.getLogger("test.driver")


@dataclass
class Cluster:
    transport: str = "http"
    drivers: dict[str, RaftDriver] = field(default_factory=dict)
    services: dict[str, LockService] = field(default_factory=dict)
    storages: dict[str, InMemoryRaftStorage] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    now_ms: int = 1_000_000
    pipes: list[tuple[str, str, MemoryConn]] = field(default_factory=list)
    inbound: list[asyncio.Task[None]] = field(default_factory=list)

    async def cut(self, *node_ids: str) -> None:
        """Take nodes off the network: calls fail, open streams close, redials fail."""
        self.down.update(node_ids)
        for src, dst, conn in self.pipes:
            if src in self.down or dst in self.down:
                await conn.close()

    def links_for(self, src: str) -> LinkFactory | None:
        if self.transport != "stream":
            return None

        def link(peer: str, deliver: Deliver) -> StreamLink:
            async def connect() -> FrameConn:
                if src in self.down or peer in self.down:
                    raise ConnectionError(f"{src}->{peer} is cut")
                local, remote = memory_pipe()
                self.pipes.append((src, peer, local))
                stream = InboundStream(remote, src, self.drivers[peer].receive, log=LOG)
                self.inbound.append(asyncio.create_task(stream.run()))
                return local

            return StreamLink(
                peer, connect, on_replies=deliver, log=LOG, backoff=Backoff(0.005, 0.02)
            )

        return link

    def send_for(self, src: str):  # type: ignore[no-untyped-def]
        async def send(peer: str, path: str, messages: list[Message]) -> list[Message]:
            if src in self.down or peer in self.down:
                raise ConnectionError(f"{src}->{peer} is cut")
            return await self.drivers[peer].receive(messages)

        return send

    async def start(self, node_id: str, seed: int, *, join: bool = False) -> None:
        storage = self.storages.setdefault(node_id, InMemoryRaftStorage())
        restored = await storage.load()
        service = LockService(
            clock_ms=lambda: self.now_ms, request_timeout_ms=1500, log=logging.LoggerAdapter(LOG)
        )
        if restored.snapshot is not None:
            service.restore(restored.snapshot.data)
        config = RaftConfig(node_id=node_id, voters=IDS, election_timeout_ticks=10, join=join)
        node = RaftNode(config, random.Random(seed), restored)
        driver = RaftDriver(
            node,
            storage,
            self.send_for(node_id),
            service,
            tick_ms=5,
            snapshot_entries=20,
            log=LOG,
            on_tick=service.on_tick,
            links=self.links_for(node_id),
        )
        service.driver = driver
        self.drivers[node_id], self.services[node_id] = driver, service
        await driver.start()

    async def stop(self, node_id: str) -> None:
        await self.drivers[node_id].stop()

    async def leader(self, timeout_s: float = 5.0) -> str:
        async with asyncio.timeout(timeout_s):
            while True:
                leaders = [
                    i
                    for i, d in self.drivers.items()
                    if d.node.state == "leader" and i not in self.down
                ]
                if len(leaders) == 1:
                    return leaders[0]
                await asyncio.sleep(0.01)


def _acquire(request_id: str, owner: str, resource: str = "r", wait_ms: int = 0) -> dict:  # type: ignore[type-arg]
    return {
        "op": "acquire",
        "request_id": request_id,
        "resource": resource,
        "owner": owner,
        "mode": "exclusive",
        "ttl_ms": 60_000,
        "wait_ms": wait_ms,
    }


async def test_leader_grants_and_every_node_applies(cluster: Cluster) -> None:
    leader = await cluster.leader()
    outcome = await cluster.services[leader].execute(_acquire("q1", "alice"))
    assert isinstance(outcome, Granted)
    for node_id, driver in cluster.drivers.items():
        await asyncio.wait_for(driver.wait_applied(outcome.token), 2)
        holders = cluster.services[node_id].table.view("r")["holders"]
        assert [h["owner"] for h in holders] == ["alice"]


async def test_follower_refuses_to_propose(cluster: Cluster) -> None:
    leader = await cluster.leader()
    follower = next(i for i in IDS if i != leader)
    with pytest.raises(NotLeader):
        await cluster.services[follower].execute(_acquire("q1", "alice"))


async def test_waiter_is_answered_when_the_holder_releases(cluster: Cluster) -> None:
    leader = await cluster.leader()
    service = cluster.services[leader]
    first = await service.execute(_acquire("q1", "alice"))
    assert isinstance(first, Granted)
    waiting = asyncio.create_task(
        service.execute(_acquire("q2", "bob", wait_ms=5000), wait_ms=5000)
    )
    await asyncio.sleep(0.05)
    assert not waiting.done()
    release = {"op": "release", "request_id": "q3", "resource": "r", "owner": "alice"}
    released = await service.execute({**release, "token": first.token})
    assert isinstance(released, Released)
    # The release's own entry granted bob and answered him as it was applied: one more
    # turn of the loop finishes his request, with nothing polling for it.
    await asyncio.sleep(0)
    assert waiting.done()
    granted = waiting.result()
    assert isinstance(granted, Granted) and granted.owner == "bob"
    assert granted.token > first.token


async def test_waiter_times_out_with_locked(cluster: Cluster) -> None:
    leader = await cluster.leader()
    service = cluster.services[leader]
    await service.execute(_acquire("q1", "alice"))
    start = cluster.now_ms
    task = asyncio.create_task(service.execute(_acquire("q2", "bob", wait_ms=200), wait_ms=200))
    await asyncio.sleep(0.05)
    cluster.now_ms = start + 250  # the leader's clock passes bob's deadline
    outcome = await asyncio.wait_for(task, 2)
    assert isinstance(outcome, Refused) and outcome.code == "timeout"


async def test_many_concurrent_proposals_share_batches(cluster: Cluster) -> None:
    leader = await cluster.leader()
    service = cluster.services[leader]
    outcomes = await asyncio.gather(
        *(service.execute(_acquire(f"q{i}", f"o{i}", resource=f"r{i}")) for i in range(100))
    )
    tokens = [o.token for o in outcomes if isinstance(o, Granted)]
    assert len(tokens) == 100
    assert cluster.drivers[leader].node.last_index < 100 + 10  # no entry per retry
    # compaction ran (snapshot_entries=20) and the table survived it
    assert cluster.drivers[leader].node.snapshot is not None


async def test_linearizable_read_sees_a_completed_grant(cluster: Cluster) -> None:
    leader = await cluster.leader()
    await cluster.services[leader].execute(_acquire("q1", "alice"))
    view = await cluster.services[leader].read("r")
    assert [h["owner"] for h in view["holders"]] == ["alice"]
    assert view["read_index"] >= 2


async def test_minority_leader_grants_nothing_and_answers_unavailable(cluster: Cluster) -> None:
    leader = await cluster.leader()
    others = [i for i in IDS if i != leader]
    await cluster.cut(*others)  # the leader can reach nobody
    with pytest.raises((QuorumUnavailableError, NotLeader)):
        await cluster.services[leader].execute(_acquire("q1", "alice"))
    assert cluster.services[leader].table.view("r")["holders"] == []


async def test_restart_recovers_state_from_storage(cluster: Cluster) -> None:
    leader = await cluster.leader()
    granted = await cluster.services[leader].execute(_acquire("q1", "alice"))
    assert isinstance(granted, Granted)
    await cluster.stop(leader)
    await cluster.cut(leader)
    new_leader = await cluster.leader()
    assert new_leader != leader
    cluster.down.discard(leader)
    await cluster.start(leader, seed=99)
    driver = cluster.drivers[leader]
    await asyncio.wait_for(driver.wait_applied(granted.token), 3)
    holders = cluster.services[leader].table.view("r")["holders"]
    assert [(h["owner"], h["token"]) for h in holders] == [("alice", granted.token)]
    stored = json.dumps(cluster.storages[leader].hard_state.term)
    assert int(stored) >= 1


async def test_steady_writes_carry_entries_but_no_hard_state(cluster: Cluster) -> None:
    """Once term and vote are durable, a moved commit index is never written on its own
    nor alongside entries: a steady node's write is the entries alone (one RPUSH)."""
    leader = await cluster.leader()
    assert isinstance(await cluster.services[leader].execute(_acquire("s0", "alice")), Granted)
    term = cluster.drivers[leader].node.term
    writes: dict[str, list[tuple[object, int]]] = {n: [] for n in cluster.storages}
    for node_id, storage in cluster.storages.items():
        original = storage.save

        async def save(hard_state, entries, snapshot=None, kept=(), *, _o=original, _n=node_id):  # type: ignore[no-untyped-def]
            writes[_n].append((hard_state, len(entries)))
            await _o(hard_state, entries, snapshot, kept)

        storage.save = save  # type: ignore[method-assign]
    for i in range(10):
        command = _acquire(f"s{i + 1}", "alice", resource=f"r{i + 1}")
        assert isinstance(await cluster.services[leader].execute(command), Granted)
    assert cluster.drivers[leader].node.term == term, "an election came between"
    assert sum(1 for w in writes.values() if w) >= 2, "a quorum wrote the entries"
    for node_id, node_writes in writes.items():
        carried = [(hs, entries) for hs, entries in node_writes if hs is not None or not entries]
        assert carried == [], node_id


# -- applying on a follower ------------------------------------------------------------------


@dataclass
class _Recorder:
    """A state machine that records the indexes it applied."""

    applied: list[int] = field(default_factory=list)

    def apply(self, entry: Entry) -> None:
        self.applied.append(entry.index)

    def restore(self, data: str) -> None:
        self.applied = json.loads(data)

    def snapshot(self) -> str:
        return json.dumps(self.applied)


async def _unstarted_follower(snapshot_entries: int) -> tuple[RaftDriver, _Recorder]:
    """A follower driver stepped by hand: no tick loop, no links (nothing is sent)."""

    async def send(peer: str, path: str, messages: list[Message]) -> list[Message]:
        raise AssertionError("a follower stepped by hand sends nothing")

    config = RaftConfig(node_id="n2", voters=IDS, election_timeout_ticks=10)
    machine = _Recorder()
    driver = RaftDriver(
        RaftNode(config, random.Random(1)),
        InMemoryRaftStorage(),
        send,
        machine,
        tick_ms=5,
        snapshot_entries=snapshot_entries,
        log=LOG,
    )
    return driver, machine


def _append(prev: int, commit: int) -> AppendRequest:
    entry = Entry(1, prev + 1, "command", json.dumps({"n": prev + 1}))
    return AppendRequest("n1", "n2", 1, prev, 1 if prev else 0, (entry,), commit)


async def test_a_follower_answers_an_append_before_applying_what_it_commits() -> None:
    """The leader waits for this answer to commit; applying the entries the append
    commits is left to the next event-loop turn, after the answer left."""
    driver, machine = await _unstarted_follower(snapshot_entries=1000)
    assert await driver.receive([_append(0, 0)]) == [AppendResponse("n2", "n1", 1, True, 1)]
    waiter = asyncio.ensure_future(driver.wait_applied(1))
    assert await driver.receive([_append(1, 1)]) == [AppendResponse("n2", "n1", 1, True, 2)]
    assert machine.applied == []  # answered, not applied yet
    assert driver.applied_index == 0 and not waiter.done()
    await asyncio.sleep(0)
    assert machine.applied == [1]
    assert driver.applied_index == 1
    await asyncio.wait_for(waiter, 1)
    # What is still deferred is applied before anything a later append commits.
    await driver.receive([_append(2, 2)])
    await driver.receive([_append(3, 3)])
    await asyncio.sleep(0)
    assert machine.applied == [1, 2, 3]


async def test_a_follower_applies_deferred_entries_before_it_snapshots() -> None:
    driver, machine = await _unstarted_follower(snapshot_entries=1)
    await driver.receive([_append(0, 0)])
    await driver.receive([_append(1, 1)])  # commits 1 and compacts in the same drain
    snapshot = driver.node.snapshot
    assert snapshot is not None and snapshot.last_index == 1
    assert json.loads(snapshot.data) == [1]
    assert machine.applied == [1]


# -- compaction ------------------------------------------------------------------------------


def _due(logged: int, **kw: object) -> bool:
    args: dict = {"leader": True, "stagger": 0, "busy": False, "followers_have_it": lambda: True}  # type: ignore[type-arg]
    args.update(kw)
    return compaction_due(logged, 100, **args)


def test_followers_compact_at_the_threshold_plus_their_own_stagger() -> None:
    assert not _due(129, leader=False, stagger=30)
    assert _due(130, leader=False, stagger=30)


def test_a_busy_leader_defers_compaction_up_to_its_cap() -> None:
    assert not _due(99)
    assert _due(100)
    assert not _due(100, busy=True)
    assert not _due(100 * LEADER_COMPACTION_DEFER - 1, busy=True)
    assert _due(100 * LEADER_COMPACTION_DEFER, busy=True)


def test_a_leader_keeps_entries_a_follower_was_not_sent_yet_up_to_its_cap() -> None:
    assert not _due(100, followers_have_it=lambda: False)
    assert _due(100 * LEADER_COMPACTION_DEFER, followers_have_it=lambda: False)


async def _ticks(driver: RaftDriver, count: int) -> None:
    """Let `count` of the driver's ticks pass (a count of ticks, not a duration)."""
    target = driver._ticks + count
    while driver._ticks < target:
        await asyncio.sleep(0.001)


async def test_leader_compacts_when_idle_but_not_past_a_cut_off_follower(cluster: Cluster) -> None:
    leader = await cluster.leader()
    behind = next(i for i in IDS if i != leader)
    await cluster.cut(behind)
    service, driver = cluster.services[leader], cluster.drivers[leader]
    for i in range(30):  # past snapshot_entries=20, short of the cap of 80
        assert isinstance(await service.execute(_acquire(f"c{i}", "o", resource=f"r{i}")), Granted)
    await _ticks(driver, 5)
    assert driver.node.snapshot is None  # `behind` still needs every entry
    for i in range(30, 90):
        assert isinstance(await service.execute(_acquire(f"c{i}", "o", resource=f"r{i}")), Granted)
    await _ticks(driver, 5)
    snapshot = driver.node.snapshot
    assert snapshot is not None  # the cap: a dead follower cannot pin the log forever
    cluster.down.discard(behind)  # it comes back, gets the snapshot, and catches up
    await asyncio.wait_for(cluster.drivers[behind].wait_applied(driver.node.applied_index), 5)
    assert cluster.services[behind].table.view("r89")["holders"][0]["owner"] == "o"
