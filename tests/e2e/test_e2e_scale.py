"""Adding and removing nodes on a running compose cluster, for each role, under traffic.

Each scenario does what the README tells a user to do: `up -d --scale worker=2`, wait
until the new nodes are part of the role (lock_manager: `POST /raft/members`, then voters
after promotion; queue and cache: on every node's ring), send traffic through them too,
then take them away again (lock_manager: `DELETE /raft/members/{id}` first) with
`--scale worker=0`. Client threads run through all of it, and what they saw is checked
against the role's promise:

* lock_manager: one exclusive holder at a time and fencing tokens increasing in the
  order of the grants, judged from the clients' clocks only where that is conservative
  (a grant is seen after it happened, a release is counted from when it was sent, a lease
  from its `expires_at_ms` on the same host clock);
* queue: every publish answered 200 is consumed;
* cache: no GET returns a value older than one whose PUT had returned before it started.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from compose_harness import NODES, ComposeCluster, E2EError, Worker, wait_for
from role_clients import (
    TRANSIENT,
    Targets,
    Traffic,
    answer,
    consume_and_ack,
    drain,
    leader_among,
    publish,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPLICAS = 2


def ids_of(workers: Sequence[Worker]) -> list[str]:
    return [worker.node_id for worker in workers]


def peers_of(cluster: ComposeCluster, node: str) -> set[str] | None:
    """The peers ``node`` knows (`GET /cluster`), or None while it does not answer."""
    view = answer(cluster, node, "/cluster")
    return None if view is None else set(view["peers"])


def wait_discovered(cluster: ComposeCluster, workers: Sequence[str], present: bool) -> None:
    """Until node1..3 all list (or all no longer list) every worker among their peers."""

    def settled() -> bool:
        for node in NODES:
            peers = peers_of(cluster, node)
            if peers is None or any((worker in peers) != present for worker in workers):
                return False
        return True

    state = "listed" if present else "gone"
    wait_for(f"workers {workers} {state} in /cluster of node1..3", settled, 60)


# -- lock_manager -------------------------------------------------------------------------

RESOURCE = "scale-orders"
LOCK_TTL_MS = 15_000


@dataclass(frozen=True)
class Grant:
    owner: str
    token: int
    granted_s: float  # host clock when the grant reached the client
    free_by_s: float  # the earliest the lock may have been free again


@dataclass
class LockClients:
    """Clients taking, holding briefly and releasing one exclusive lock, through the
    nodes in ``targets``."""

    cluster: ComposeCluster
    targets: Targets
    grants: list[Grant] = field(default_factory=list)
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _serial: int = 0

    def step(self, client: int, rng: random.Random) -> bool:
        with self._mutex:
            self._serial += 1
            owner = f"client{client}-{self._serial}"
        request = {
            "resource": RESOURCE,
            "owner": owner,
            "mode": "exclusive",
            "ttl_ms": LOCK_TTL_MS,
            "wait_ms": 5_000,
        }
        node = self.targets.pick(rng)
        try:
            reply = self.cluster.post(node, "/lock/acquire", request)
        except TRANSIENT:
            time.sleep(0.2)
            return False
        granted_s = time.time()
        if reply.status in (423, 503):  # not granted in time, or no quorum for a moment
            time.sleep(0.1)
            return False
        if reply.status != 200:
            raise E2EError(f"acquire as {owner} via {node}: {reply.status} {reply.body}")
        self.targets.count(node)
        time.sleep(0.02)  # the critical section
        released_s = time.time()
        self.release(rng, owner, int(reply.body["token"]))
        free_by_s = min(released_s, reply.body["expires_at_ms"] / 1000)
        with self._mutex:
            self.grants.append(Grant(owner, int(reply.body["token"]), granted_s, free_by_s))
        return True

    def release(self, rng: random.Random, owner: str, token: int) -> None:
        """Release, retrying through any node until it is done (409: already released)."""
        body = {"resource": RESOURCE, "owner": owner, "token": token}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                reply = self.cluster.post(self.targets.pick(rng), "/lock/release", body)
            except TRANSIENT:
                reply = None
            if reply is not None and reply.status in (200, 409):
                return
            time.sleep(0.2)
        raise E2EError(f"release by {owner} not answered within 60 s")


def wait_voters(cluster: ComposeCluster, nodes: Sequence[str], voters: set[str]) -> None:
    """Until every node in ``nodes`` has committed exactly ``voters`` and no learner."""

    def settled() -> bool:
        for node in nodes:
            view = answer(cluster, node, "/raft/members")
            if view is None:
                return False
            committed = view["committed"]
            if set(committed["voters"]) != voters or committed["learners"]:
                return False
        return True

    wait_for(f"voters {sorted(voters)} committed on {list(nodes)}", settled, 60)


def check_exclusive(grants: Sequence[Grant]) -> None:
    """At most one holder at any moment, and tokens rising in the order of the grants."""
    free_by_s = 0.0
    last: Grant | None = None
    for grant in sorted(grants, key=lambda g: g.granted_s):
        if last is not None and grant.granted_s < free_by_s:
            raise E2EError(f"double grant: {grant} while {last} may still hold")
        if last is not None and grant.token <= last.token:
            raise E2EError(f"fencing token went back: {last} then {grant}")
        free_by_s, last = max(free_by_s, grant.free_by_s), grant


def test_the_lock_check_catches_overlaps_and_tokens_going_back() -> None:
    """Forged histories: the check passes a clean one and fails each kind of violation."""
    first, second = Grant("a", 1, 10.0, 10.5), Grant("b", 2, 10.6, 11.0)
    check_exclusive([second, first])
    with pytest.raises(E2EError, match="double grant"):
        check_exclusive([first, Grant("b", 2, 10.4, 11.0)])
    with pytest.raises(E2EError, match="token went back"):
        check_exclusive([first, Grant("b", 1, 10.6, 11.0)])


def change_membership(cluster: ComposeCluster, method: str, path: str, body: Any) -> None:
    """`POST /raft/members` or `DELETE /raft/members/{id}` through node1, retried while
    the cluster is busy (409 another change, 503 no leader yet, 504 learner catching up,
    400 unknown_peer before discovery saw the node); 404 not_member ends a removal that
    an earlier try already made."""
    deadline = time.monotonic() + 90
    while True:
        try:
            reply = cluster.call("node1", method, path, body)
        except TRANSIENT as exc:
            error: Any = exc
        else:
            error = reply.body
            code = reply.field("error")["code"] if reply.status >= 400 else None
            if reply.status == 200 or (method == "DELETE" and code == "not_member"):
                return
            if reply.status not in (409, 503, 504) and code != "unknown_peer":
                raise E2EError(f"{method} {path}: {reply.status} {error}")
        if time.monotonic() > deadline:
            raise E2EError(f"{method} {path}: not done within 90 s: {error}")
        time.sleep(1)


def test_lock_workers_join_and_leave_without_double_grant(
    compose_cluster: Callable[[str], ComposeCluster],
) -> None:
    cluster = compose_cluster("lock_manager")
    wait_for("a leader", lambda: leader_among(cluster, NODES), 60)
    targets = Targets(NODES)
    clients = LockClients(cluster, targets)
    with Traffic("lock clients", clients.step, clients=3) as traffic:
        traffic.wait_steps(10)

        # Two workers start, are found through Redis, and wait to be added: no node
        # counts them as voters until POST /raft/members made them learners, caught
        # them up and promoted them.
        workers = ids_of(cluster.scale(REPLICAS))
        wait_discovered(cluster, workers, present=True)
        wait_voters(cluster, NODES, set(NODES))
        for worker in workers:
            change_membership(cluster, "POST", "/raft/members", {"id": worker})
        everyone = [*NODES, *workers]
        wait_voters(cluster, everyone, set(everyone))
        for worker in workers:
            cluster.wait_ready(worker, timeout_s=60)
        targets.add(workers)
        traffic.wait_until("grants through each worker", lambda: targets.served_each(workers, 5))

        # Out of Raft first, then the containers go; the three nodes go on alone.
        targets.remove(workers)
        for worker in workers:
            change_membership(cluster, "DELETE", f"/raft/members/{worker}", None)
        wait_voters(cluster, NODES, set(NODES))
        cluster.scale(0)
        wait_discovered(cluster, workers, present=False)
        traffic.wait_steps(10)
        traffic.stop()
    print(f"lock: {len(clients.grants)} grants, by node asked: {dict(targets.served)}")
    check_exclusive(clients.grants)
    assert len(clients.grants) >= 40
    wait_for("a leader among node1..3", lambda: leader_among(cluster, NODES), 60)


# -- queue --------------------------------------------------------------------------------

MESSAGES_PER_PUBLISH = 5


@dataclass
class QueueClients:
    """Producers publishing batches to the topics in ``topics`` and consumers acking what
    they get, through the nodes in ``targets``."""

    cluster: ComposeCluster
    targets: Targets
    topics: list[str]
    published: dict[str, dict[str, Any]] = field(default_factory=dict)  # topic: id: body
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    owners: set[str] = field(default_factory=set)
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _serial: int = 0

    def add_topics(self, topics: Sequence[str]) -> None:
        with self._mutex:
            self.topics.extend(topics)

    def produce(self, client: int, rng: random.Random) -> bool:
        with self._mutex:
            self._serial += 1
            key, topic = f"p{client}-{self._serial}", rng.choice(self.topics)
        bodies = [{"key": key, "n": n} for n in range(MESSAGES_PER_PUBLISH)]
        answer = publish(self.cluster, lambda: self.targets.pick(rng), topic, bodies, key)
        with self._mutex:
            self.published.setdefault(topic, {}).update(zip(answer["ids"], bodies, strict=True))
            self.owners.add(str(answer["owner"]))
        return True

    def consume(self, client: int, rng: random.Random) -> bool:
        with self._mutex:
            topic = rng.choice(self.topics)
        try:
            got = consume_and_ack(
                self.cluster,
                self.targets.pick(rng),
                topic,
                f"bg{client}",
                visibility_ms=5_000,
                ack_must_succeed=False,  # an unacked entry comes back after visibility_ms
            )
        except TRANSIENT:
            return False
        with self._mutex:
            self.seen.setdefault(topic, {}).update(got)
        return bool(got)


def queue_ring(cluster: ComposeCluster, node: str) -> set[str] | None:
    ring = answer(cluster, node, "/ring")
    return None if ring is None else set(ring["members"])


RingProbe = Callable[[ComposeCluster, str], "set[str] | None"]


def wait_ring(
    cluster: ComposeCluster, nodes: Sequence[str], want: set[str], ring: RingProbe
) -> None:
    """Until every node in ``nodes`` has exactly ``want`` on its ring."""

    def settled() -> bool:
        return all(ring(cluster, node) == want for node in nodes)

    wait_for(f"ring {sorted(want)} on {list(nodes)}", settled, 60)


def workers_join_rings(cluster: ComposeCluster, targets: Targets, ring: RingProbe) -> list[str]:
    """Scale up; once every node has the workers on its ring, clients use them too."""
    workers = ids_of(cluster.scale(REPLICAS))
    everyone = [*NODES, *workers]
    wait_ring(cluster, everyone, set(everyone), ring)
    targets.add(workers)
    return workers


def workers_leave_rings(
    cluster: ComposeCluster, targets: Targets, workers: Sequence[str], ring: RingProbe
) -> None:
    """Clients stop using the workers, which are scaled away; node1..3 drop them."""
    targets.remove(workers)
    cluster.scale(0)
    wait_discovered(cluster, workers, present=False)
    wait_ring(cluster, NODES, set(NODES), ring)


def topic_owned_by(cluster: ComposeCluster, owner: str, prefix: str) -> str:
    for n in range(500):
        topic = f"{prefix}-{n}"
        if cluster.get("node1", f"/ring?topic={topic}").field("owner") == owner:
            return topic
    raise E2EError(f"{owner} owns none of 500 topics")


def test_queue_workers_join_and_leave_losing_nothing(
    compose_cluster: Callable[[str], ComposeCluster],
) -> None:
    cluster = compose_cluster("queue")
    targets = Targets(NODES)
    clients = QueueClients(cluster, targets, [f"scale-{n}" for n in range(4)])
    with (
        Traffic("producers", clients.produce) as producers,
        Traffic("consumers", clients.consume) as consumers,
    ):
        producers.wait_steps(10)

        # The workers come up and every node puts them on its ring; topics they own
        # take traffic through every node, the workers included.
        workers = workers_join_rings(cluster, targets, queue_ring)
        clients.add_topics([topic_owned_by(cluster, w, f"scale-{w}") for w in workers])
        producers.wait_steps(20)
        consumers.wait_steps(5)

        # Gone again: their topics move back to node1..3 and stay served.
        workers_leave_rings(cluster, targets, workers, queue_ring)
        producers.wait_steps(10)
        producers.stop()
        consumers.stop()
    counts = {topic: len(ids) for topic, ids in clients.published.items()}
    print(f"queue: messages published per topic {counts}, owners seen {clients.owners}")
    assert set(workers) <= clients.owners, f"no publish was served by {workers}"
    for topic, published in clients.published.items():
        drain(cluster, NODES, topic, set(published), clients.seen.setdefault(topic, {}), 120)
        for message_id, body in published.items():
            assert clients.seen[topic][message_id] == body


# -- cache --------------------------------------------------------------------------------

KEYS = [f"scale:{n}" for n in range(24)]


@dataclass
class CacheClients:
    """Writers (one per key: each PUTs the next version of its keys, the same version
    again until a PUT of it returns 200) and readers checking every GET against the
    newest version whose PUT returned before the GET was sent."""

    cluster: ComposeCluster
    targets: Targets
    writers: int
    committed: dict[str, int] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)  # "PUT 200": how many
    _mutex: threading.Lock = field(default_factory=threading.Lock)

    def _saw(self, outcome: str) -> None:
        with self._mutex:
            self.outcomes[outcome] += 1

    def write(self, client: int, rng: random.Random) -> bool:
        key, node = rng.choice(KEYS[client :: self.writers]), self.targets.pick(rng)
        with self._mutex:
            version = self.committed.get(key, 0) + 1
        try:
            reply = self.cluster.call(node, "PUT", f"/cache/{key}", {"value": str(version)})
        except TRANSIENT as exc:
            self._saw(f"PUT {type(exc).__name__}")
            return False
        self._saw(f"PUT {reply.status}")
        if reply.status == 503:
            # busy or not_home (its key moved while it waited): retried as it is.
            return False
        if reply.status != 200:
            raise E2EError(f"PUT {key}={version} via {node}: {reply.status} {reply.body}")
        with self._mutex:
            self.committed[key] = version
        self.targets.count(node)
        return True

    def read(self, client: int, rng: random.Random) -> bool:
        key = rng.choice(KEYS)
        node = self.targets.pick(rng)
        with self._mutex:
            floor = self.committed.get(key)
        try:
            reply = self.cluster.get(node, f"/cache/{key}")
        except TRANSIENT as exc:
            self._saw(f"GET {type(exc).__name__}")
            return False
        self._saw(f"GET {reply.status}")
        if reply.status == 503:
            return False
        if reply.status not in (200, 404):
            raise E2EError(f"GET {key} via {node}: {reply.status} {reply.body}")
        value = int(reply.field("value")) if reply.status == 200 else None
        if floor is not None and (value is None or value < floor):
            raise E2EError(
                f"stale read of {key} via {node}: {reply.status} {reply.body} after "
                f"PUT {floor} had returned"
            )
        self.targets.count(node)
        return True


def cache_ring(cluster: ComposeCluster, node: str) -> set[str] | None:
    view = answer(cluster, node, "/cluster")
    return None if view is None else set(view["state"]["ring"])


def test_cache_workers_join_and_leave_without_stale_reads(
    compose_cluster: Callable[[str], ComposeCluster],
) -> None:
    cluster = compose_cluster("cache")
    targets = Targets(NODES)
    clients = CacheClients(cluster, targets, writers=2)
    with (
        Traffic("writers", clients.write, clients=2) as writers,
        Traffic("readers", clients.read, clients=2) as readers,
    ):
        writers.wait_steps(20)

        # The workers join every ring: some keys get a worker as their home, and reads
        # and writes go through the workers too.
        workers = workers_join_rings(cluster, targets, cache_ring)
        readers.wait_until("each worker serving", lambda: targets.served_each(workers, 20))

        # They leave: their keys get a home on node1..3 again, nothing older is read.
        workers_leave_rings(cluster, targets, workers, cache_ring)
        writers.wait_steps(20)
        readers.wait_steps(20)
        writers.stop()
        readers.stop()
    print(f"cache: {dict(clients.outcomes)}, last versions {clients.committed}")
    print(f"cache: successful operations by node asked: {dict(targets.served)}")
    # Quiet again, every node reads the last version written of every key.
    for key, version in clients.committed.items():
        for node in NODES:
            wait_reads(cluster, node, key, version)


def wait_reads(cluster: ComposeCluster, node: str, key: str, version: int) -> None:
    """Until ``node`` answers ``version`` for ``key``; any other value fails at once."""

    def answered() -> bool:
        reply = cluster.get(node, f"/cache/{key}")
        if reply.status == 200 and reply.body["value"] != str(version):
            raise AssertionError(f"{node} reads {key}={reply.body}, last PUT was {version}")
        return reply.status == 200

    wait_for(f"{node} reads {key}={version}", answered, 30)
