"""Small verbs for hand-written scenarios (in the spirit of etcd's interaction tests).

A scenario builds a calm cluster (every message arrives one step later, nothing is
lost), then breaks it on purpose: `cluster.net.isolate("n1")`, `cluster.net.split(...)`,
`cluster.net.deafen(leader)`, `cluster.crash(...)`. The checkers stay on throughout, so a
scenario asserts what it is about and the checkers guard everything else.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from simcluster import Cluster, ClusterConfig
from simnet import NetConfig

ELECTION_STEPS = 60
_request_ids = itertools.count(1)


def calm_cluster(size: int = 3, seed: int = 7, **config: Any) -> Cluster:
    """A booted cluster on a perfect network; `config` overrides `ClusterConfig` fields."""
    settings = ClusterConfig(size=size, net=NetConfig(min_delay=1, max_delay=1), **config)
    return Cluster(seed, settings).boot()


def run_until(cluster: Cluster, done: Callable[[], bool], max_steps: int, what: str) -> int:
    """Step until `done()`; returns the steps taken, fails the test after `max_steps`."""
    for taken in range(max_steps + 1):
        if done():
            return taken
        cluster.step()
    raise AssertionError(f"not {what} within {max_steps} steps (seed {cluster.seed})")


def wait_for_leader(cluster: Cluster, among: set[str] | None = None) -> str:
    def found() -> bool:
        leader = cluster.leader()
        return leader is not None and (among is None or leader in among)

    run_until(cluster, found, ELECTION_STEPS, "a leader elected")
    leader = cluster.leader()
    assert leader is not None
    return leader


def acquire(
    resource: str,
    owner: str,
    mode: str = "exclusive",
    ttl_ms: int = 60_000,
    wait_ms: int = 0,
) -> dict[str, Any]:
    """An acquire command without `now_ms`; `propose_on` stamps it from the node's clock."""
    return {
        "op": "acquire",
        "request_id": f"s{next(_request_ids)}",
        "resource": resource,
        "owner": owner,
        "mode": mode,
        "ttl_ms": ttl_ms,
        "wait_ms": wait_ms,
    }


def release(resource: str, owner: str, token: int) -> dict[str, Any]:
    return {
        "op": "release",
        "request_id": f"s{next(_request_ids)}",
        "resource": resource,
        "owner": owner,
        "token": token,
    }


def propose_on(cluster: Cluster, node_id: str, command: dict[str, Any]) -> str:
    """Stamp `now_ms` from the node's clock and propose; returns the request id."""
    stamped = dict(command, now_ms=cluster.now_ms(node_id))
    cluster.propose(node_id, [stamped])
    return str(command.get("request_id", ""))


def outcome_of(cluster: Cluster, request_id: str) -> Any | None:
    """The committed outcome for a request, or None if it has not been applied."""
    for outcomes in cluster.locks.outcomes.values():
        for outcome in outcomes:
            if getattr(outcome, "request_id", None) == request_id:
                return outcome
    return None


def commit(cluster: Cluster, command: dict[str, Any], max_steps: int = 40) -> Any:
    """Propose on the current leader and step until its outcome is committed."""
    request_id = propose_on(cluster, wait_for_leader(cluster), command)
    run_until(
        cluster,
        lambda: outcome_of(cluster, request_id) is not None,
        max_steps,
        f"{request_id} committed",
    )
    return outcome_of(cluster, request_id)


def commit_many(cluster: Cluster, count: int, resource: str = "bulk") -> None:
    """Commit `count` grant/release pairs so the log grows past compaction thresholds."""
    for i in range(count):
        granted = commit(cluster, acquire(f"{resource}{i % 3}", "bulk-owner"))
        commit(cluster, release(granted.resource, "bulk-owner", granted.token))


def terms_with_leaders(cluster: Cluster) -> dict[int, str]:
    return dict(cluster.raft_checker.leaders)
