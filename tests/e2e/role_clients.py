"""Client steps the e2e scenarios share: what an application of each role does through
the published ports (Raft status and leader, retried publishes and draining consumers,
retried cache writes), and `Traffic`, which keeps doing one of them in background threads
while a scenario changes the cluster under it.

Every helper takes a node name that `ComposeCluster.url` knows: node1..node3 or the node
id of a worker replica.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from compose_harness import ComposeCluster, E2EError, Reply, wait_for

# What a request to a node that is stopping, starting or moving work can end in; the
# callers retry these (and only these) instead of failing.
TRANSIENT = (OSError, http.client.HTTPException)


def answer(cluster: ComposeCluster, node: str, path: str) -> Any:
    """The body of a 200 answer to ``GET path``, or None (another status, no answer)."""
    try:
        reply = cluster.get(node, path)
    except TRANSIENT:
        return None
    return reply.body if reply.status == 200 else None


# -- lock_manager -------------------------------------------------------------------------


def raft_status(cluster: ComposeCluster, node: str) -> dict[str, Any] | None:
    status: dict[str, Any] | None = answer(cluster, node, "/raft/status")
    return status


def leader_among(cluster: ComposeCluster, nodes: Sequence[str]) -> str | None:
    """The leader every node in ``nodes`` agrees on, when it is one of them."""
    statuses = [raft_status(cluster, node) for node in nodes]
    leaders = {s["leader_id"] for s in statuses if s is not None}
    if len(leaders) == 1 and None not in statuses:
        leader = leaders.pop()
        return leader if leader in nodes else None
    return None


# -- queue --------------------------------------------------------------------------------


def publish(
    cluster: ComposeCluster,
    node: str | Callable[[], str],
    topic: str,
    bodies: list[Any],
    key: str,
) -> dict[str, Any]:
    """Publish once, retrying only answers that are not 200 (same idempotency key), each
    try through ``node`` (or the node it returns); the 200 answer (``ids``, ``owner``)."""
    body = {"topic": topic, "messages": bodies, "idempotency_key": key}
    deadline = time.monotonic() + 30
    while True:
        via = node() if callable(node) else node
        try:
            reply = cluster.post(via, "/queue/publish", body)
        except TRANSIENT as exc:
            error: Any = exc
        else:
            error = reply.body
            if reply.status == 200:
                return dict(reply.body)
        if time.monotonic() > deadline:
            raise E2EError(f"publish {key} via {via}: {error}")
        time.sleep(0.5)


def consume_and_ack(
    cluster: ComposeCluster,
    node: str,
    topic: str,
    consumer: str,
    visibility_ms: int,
    ack_must_succeed: bool = True,
) -> dict[str, Any]:
    """One consume of group ``e2e`` through ``node``, acked at once: ``{id: body}``."""
    request = {
        "topic": topic,
        "group": "e2e",
        "consumer": consumer,
        "max": 100,
        "visibility_ms": visibility_ms,
        "block_ms": 200,
    }
    reply = cluster.post(node, "/queue/consume", request)
    if reply.status != 200:
        return {}
    got = {m["id"]: m["body"] for m in reply.body["messages"]}
    if got:
        acked = cluster.post(node, "/queue/ack", {"topic": topic, "group": "e2e", "ids": list(got)})
        if ack_must_succeed and acked.status != 200:
            raise E2EError(f"ack via {node}: {acked.status} {acked.body}")
    return got


def drain(
    cluster: ComposeCluster,
    nodes: Sequence[str],
    topic: str,
    want: set[str],
    seen: dict[str, Any] | None = None,
    timeout_s: float = 60,
) -> dict[str, Any]:
    """Consume and ack through ``nodes`` in turn until every id of ``want`` was seen
    (``seen``: what was consumed already, updated in place)."""
    seen = {} if seen is None else seen

    def step() -> bool:
        for index, node in enumerate(nodes):
            seen.update(consume_and_ack(cluster, node, topic, f"c{index}", 60_000))
        return want <= seen.keys()

    wait_for(f"every acknowledged message of {topic} consumed", step, timeout_s, every_s=0.1)
    return seen


# -- cache --------------------------------------------------------------------------------


def put(cluster: ComposeCluster, node: str, key: str, value: Any, timeout_s: float = 30) -> Reply:
    """PUT, retrying 503 (a write waits for a cut-off copy's lease, or for a new home)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = cluster.call(node, "PUT", f"/cache/{key}", {"value": value})
        if reply.status == 200:
            return reply
        if reply.status != 503 or time.monotonic() > deadline:
            raise E2EError(f"PUT {key} via {node}: {reply.status} {reply.body}")
        time.sleep(0.5)


# -- background traffic -------------------------------------------------------------------


class Targets:
    """The nodes clients may send to; a scenario adds a worker once it serves and takes it
    out before removing it, so clients mostly see nodes that are meant to answer."""

    def __init__(self, nodes: Sequence[str]) -> None:
        self._nodes = list(nodes)
        self._lock = threading.Lock()
        self.served: Counter[str] = Counter()  # successful operations, by node asked

    def add(self, nodes: Sequence[str]) -> None:
        with self._lock:
            self._nodes.extend(node for node in nodes if node not in self._nodes)

    def remove(self, nodes: Sequence[str]) -> None:
        with self._lock:
            self._nodes = [node for node in self._nodes if node not in nodes]

    def pick(self, rng: random.Random) -> str:
        with self._lock:
            return rng.choice(self._nodes)

    def count(self, node: str) -> None:
        """``node`` answered an operation successfully."""
        with self._lock:
            self.served[node] += 1

    def served_each(self, nodes: Sequence[str], least: int) -> bool:
        """Whether each of ``nodes`` answered at least ``least`` operations successfully."""
        with self._lock:
            return all(self.served[node] >= least for node in nodes)


class Traffic:
    """Run ``step(client, rng)`` over and over in ``clients`` threads until `stop`.

    A step does one client operation, records what it saw and says whether the operation
    succeeded; an exception it raises ends that client and is raised again by `stop`, so
    a broken invariant fails the test instead of dying in a thread. `done` counts the
    successful steps, so a scenario can wait for traffic to have run across a change.
    """

    def __init__(
        self, name: str, step: Callable[[int, random.Random], bool], clients: int = 2
    ) -> None:
        self.name = name
        self._step = step
        self._stopping = threading.Event()
        self._errors: list[BaseException] = []
        self._count_lock = threading.Lock()
        self.done = 0
        self._threads = [
            threading.Thread(target=self._run, args=(client,), name=f"{name}-{client}", daemon=True)
            for client in range(clients)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the clients; a client's failure is raised (chained to any failure of the
        scenario itself, which may only be a consequence of it)."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=120)
        self.raise_errors()

    def _run(self, client: int) -> None:
        rng = random.Random(client)
        while not self._stopping.is_set():
            try:
                succeeded = self._step(client, rng)
            except BaseException as exc:  # noqa: BLE001 - handed to the test by stop()
                self._errors.append(exc)
                return
            if succeeded:
                with self._count_lock:
                    self.done += 1

    def wait_steps(self, more: int, timeout_s: float = 120) -> None:
        """Wait until ``more`` further steps succeeded (fails at once if a client failed)."""
        target = self.done + more
        self.wait_until(f"{more} more steps", lambda: self.done >= target, timeout_s)

    def wait_until(self, what: str, condition: Callable[[], bool], timeout_s: float = 120) -> None:
        """Wait until ``condition()`` holds while the clients run; fails at once if one
        of them failed."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            self.raise_errors()
            if time.monotonic() > deadline:
                raise E2EError(f"{self.name}: not {what} within {timeout_s:.0f} s")
            time.sleep(0.2)

    def stop(self) -> None:
        self.__exit__()

    def raise_errors(self) -> None:
        if self._errors:
            raise self._errors[0]
