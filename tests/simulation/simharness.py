"""One simulated run per seed: faults, client traffic, checkers, then a liveness check.

Everything about a run — cluster size, fault mix, run length, snapshot threshold — is
derived from its seed, so `SIM_SEED=<seed>` alone replays a failure step for step.
Each concern draws from its own random stream (`"<seed>:faults"`, `"<seed>:clients"`,
...) so turning one fault class off in `minimise` leaves the others' choices alone as
far as possible.

Seeds from `MEMBER_SEED_BASE` on change the membership while everything else goes on:
six nodes of which three form the bootstrap configuration, driven by `simmembers`.
"""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from simcheck import SimInvariantError
from simcluster import CRASH_POINTS, Cluster, ClusterConfig
from simmembers import MemberPlan, MembershipDriver
from simnet import NetConfig
from simworkload import LockClients, WorkloadConfig

from distcluster_worker.raft.errors import NotLeader

REPLAY_HINT = "replay with: SIM_SEED={seed} pytest tests/simulation -k replay"


@dataclass(frozen=True)
class FaultProfile:
    """Per-step probabilities of each kind of fault."""

    name: str
    loss: float = 0.0
    duplication: float = 0.0
    max_delay: int = 2
    partition_rate: float = 0.0
    heal_rate: float = 0.1
    crash_rate: float = 0.0
    restart_rate: float = 0.1
    torn_rate: float = 0.0
    max_down: int = 1


PROFILES = {
    "calm": FaultProfile("calm", max_delay=2),
    "lossy": FaultProfile("lossy", loss=0.2, duplication=0.1, max_delay=5),
    "partitions": FaultProfile("partitions", loss=0.02, max_delay=3, partition_rate=0.04),
    "crashes": FaultProfile("crashes", max_delay=3, crash_rate=0.02, torn_rate=0.02),
    "chaos": FaultProfile(
        "chaos",
        loss=0.1,
        duplication=0.05,
        max_delay=6,
        partition_rate=0.03,
        crash_rate=0.015,
        torn_rate=0.015,
        max_down=3,
    ),
}
PROFILE_WEIGHTS = {"calm": 1, "lossy": 2, "partitions": 3, "crashes": 3, "chaos": 3}

# Seeds from here on run the lock-heavy flavour: more contention, more traffic.
LOCK_SEED_BASE = 1_000_000
# Seeds from here on change the membership (3 -> 5 -> 3 style) among six nodes.
MEMBER_SEED_BASE = 3_000_000  # (2_000_000 on are the cache simulation's seeds)
MEMBER_NODES = 6
MEMBER_BOOTSTRAP_VOTERS = 3
RAFT_WORKLOAD = WorkloadConfig()
LOCK_WORKLOAD = WorkloadConfig(resources=2, owners=5, rate=0.5, read_rate=0.0)


@dataclass(frozen=True)
class SimSpec:
    """Everything one run depends on; `from_seed` derives it all from the seed."""

    seed: int
    size: int
    profile: FaultProfile
    steps: int
    snapshot_entries: int
    max_entries_per_append: int
    clock_skew_ms: int
    heartbeat_ticks: int
    election_timeout_ticks: int = 10
    max_inflight_appends: int = 4
    max_append_bytes: int = 24 * 1024
    pre_vote: bool = True
    check_quorum: bool = True
    workload: WorkloadConfig = RAFT_WORKLOAD
    liveness_steps: int = 300
    voters: int = 0  # bootstrap voters among the nodes (0: all)
    members: MemberPlan | None = None  # membership changes, for membership seeds

    @staticmethod
    def from_seed(seed: int, size: int | None = None) -> SimSpec:
        spec = SimSpec._draw(seed, size)
        if seed < MEMBER_SEED_BASE:
            return spec
        rng = random.Random(f"{seed}:members")
        return replace(
            spec,
            size=MEMBER_NODES,
            voters=MEMBER_BOOTSTRAP_VOTERS,
            steps=rng.randint(300, 500),
            members=MemberPlan.from_rng(rng),
            # A node added late copies the whole log (no snapshot when snapshot_entries
            # is large) at max_entries_per_append per round trip: give it the time.
            liveness_steps=800,
        )

    @staticmethod
    def _draw(seed: int, size: int | None) -> SimSpec:
        rng = random.Random(f"{seed}:spec")
        names = sorted(PROFILE_WEIGHTS)
        name = rng.choices(names, weights=[PROFILE_WEIGHTS[n] for n in names])[0]
        return SimSpec(
            seed=seed,
            size=size if size is not None else (3 if seed % 2 == 0 else 5),
            profile=PROFILES[name],
            steps=rng.randint(120, 250),
            snapshot_entries=rng.choice((4, 16, 64, 1000)),
            max_entries_per_append=rng.choice((2, 8, 64)),
            clock_skew_ms=rng.choice((0, 0, 50)),
            heartbeat_ticks=rng.choice((1, 2, 3)),
            election_timeout_ticks=rng.choice((8, 10, 14)),
            max_inflight_appends=rng.choice((1, 4)),
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.8,
            workload=LOCK_WORKLOAD if LOCK_SEED_BASE <= seed < MEMBER_SEED_BASE else RAFT_WORKLOAD,
            # A generator of its own, so the draws above stay what they were for each seed.
            max_append_bytes=random.Random(f"{seed}:append-bytes").choice((1, 64, 24 * 1024)),
        )

    def cluster_config(self) -> ClusterConfig:
        p = self.profile
        net = NetConfig(loss=p.loss, duplication=p.duplication, max_delay=p.max_delay)
        return ClusterConfig(
            size=self.size,
            max_entries_per_append=self.max_entries_per_append,
            snapshot_entries=self.snapshot_entries,
            clock_skew_ms=self.clock_skew_ms,
            heartbeat_ticks=self.heartbeat_ticks,
            election_timeout_ticks=self.election_timeout_ticks,
            max_inflight_appends=self.max_inflight_appends,
            max_append_bytes=self.max_append_bytes,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
            net=net,
            voters=self.voters,
        )


class SimFailureError(AssertionError):
    """A run broke an invariant; `str()` is the one-line reproduction."""

    def __init__(self, spec: SimSpec, step: int, invariant: str, detail: str, trace: str):
        self.spec, self.step, self.invariant = spec, step, invariant
        self.detail, self.trace = detail, trace
        super().__init__(
            f"seed={spec.seed} nodes={spec.size}: {invariant} (step {step}, "
            f"{spec.profile.name}: {detail}) — " + REPLAY_HINT.format(seed=spec.seed)
        )


@dataclass
class RunStats:
    spec: SimSpec
    steps: int = 0
    committed: int = 0
    leaders: int = 0
    max_term: int = 0
    grants: int = 0
    snapshots_installed: int = 0
    liveness_steps: int = 0
    events: dict[str, int] = field(default_factory=dict)
    net: dict[str, int] = field(default_factory=dict)


# -- faults ---------------------------------------------------------------------------------


class FaultInjector:
    """Before each step: maybe partition, heal, crash (cleanly or mid-Ready), restart."""

    def __init__(self, rng: random.Random, profile: FaultProfile) -> None:
        self.rng = rng
        self.profile = profile
        self.partitioned = False

    def step(self, cluster: Cluster) -> None:
        p = self.profile
        if self.rng.random() < p.partition_rate:
            self.partition(cluster)
        elif self.partitioned and self.rng.random() < p.heal_rate:
            cluster.heal()
            self.partitioned = False
        if self.rng.random() < p.crash_rate:
            self.crash(cluster, torn=False)
        if self.rng.random() < p.torn_rate:
            self.crash(cluster, torn=True)
        for node in list(cluster.nodes.values()):
            if not node.alive and not node.retired and self.rng.random() < p.restart_rate:
                cluster.start(node.node_id)

    def partition(self, cluster: Cluster) -> None:
        ids = list(cluster.ids)
        leader = cluster.leader() or self.rng.choice(ids)
        other = self.rng.choice(ids)
        kind = self.rng.choice(
            ("isolate", "isolate leader", "split", "one-way", "deafen leader", "link")
        )
        if self.rng.random() < 0.7:
            cluster.net.heal()
        net = cluster.net
        if kind == "isolate":
            net.isolate(other)
        elif kind == "isolate leader":
            net.isolate(leader)
        elif kind == "split":
            self.rng.shuffle(ids)
            net.split(ids[: self.rng.randint(1, len(ids) // 2)])
        elif kind == "deafen leader":
            net.deafen(leader)
        else:
            a, b = self.rng.sample(ids, 2)
            net.cut_one_way(a, b) if kind == "one-way" else net.cut(a, b)
        self.partitioned = True
        cluster.record("partition", f"{kind}: {net.describe_cuts()}")
        cluster.counts[f"partition {kind}"] += 1

    def crash(self, cluster: Cluster, torn: bool) -> None:
        live = [n.node_id for n in cluster.live_nodes()]
        down = sum(1 for n in cluster.nodes.values() if not n.alive and not n.retired)
        if not live or down >= self.profile.max_down:
            return
        victim = self.rng.choice(live)
        if torn:
            cluster.crash_at_next_ready(victim, self.rng.choice(CRASH_POINTS))
        else:
            cluster.crash(victim)


# -- a run ----------------------------------------------------------------------------------


def run_spec(spec: SimSpec) -> RunStats:
    """Run one simulation; raises `SimFailureError` on any violation or core exception."""
    cluster = Cluster(spec.seed, spec.cluster_config())
    clients = LockClients(random.Random(f"{spec.seed}:clients"), spec.workload)
    faults = FaultInjector(random.Random(f"{spec.seed}:faults"), spec.profile)
    members = None
    if spec.members is not None:
        members = MembershipDriver(random.Random(f"{spec.seed}:members"), spec.members)
    stats = RunStats(spec)
    try:
        cluster.boot()
        for _ in range(spec.steps):
            faults.step(cluster)
            clients.step(cluster)
            if members is not None:
                members.step(cluster)
            cluster.step()
        cluster.check_logs_fully()
        settle = members.settle if members is not None else None
        stats.liveness_steps = check_liveness(cluster, clients, spec.liveness_steps, settle)
        cluster.check_logs_fully()
        cluster.check_tables()
    except SimInvariantError as exc:
        raise _failure(spec, cluster, exc.invariant, exc.detail) from exc
    except Exception as exc:  # noqa: BLE001 - any exception from a core is a finding
        name = type(exc).__name__
        raise _failure(spec, cluster, f"raised {name}", str(exc)) from exc
    return _collect(stats, cluster)


def run_seed(seed: int) -> RunStats:
    return run_spec(SimSpec.from_seed(seed))


def _failure(spec: SimSpec, cluster: Cluster, invariant: str, detail: str) -> SimFailureError:
    detail = " ".join(detail.split())
    return SimFailureError(spec, cluster.now, invariant, detail, cluster.format_trace())


def _collect(stats: RunStats, cluster: Cluster) -> RunStats:
    checker = cluster.raft_checker
    stats.steps = cluster.now
    stats.committed = max(checker.committed, default=0)
    stats.leaders = len(checker.leaders)
    stats.max_term = max(checker.leaders, default=0)
    stats.grants = cluster.locks.model.grants
    stats.snapshots_installed = cluster.delivered_kinds.get("SnapshotRequest", 0)
    stats.events = {k: v for k, v in cluster.counts.items() if k not in ("send", "recv")}
    if "TimeoutNow" in cluster.delivered_kinds:
        stats.events["delivered TimeoutNow"] = cluster.delivered_kinds["TimeoutNow"]
    stats.net = dict(vars(cluster.net.stats))
    return stats


# -- liveness -------------------------------------------------------------------------------


def heal_all(cluster: Cluster) -> None:
    """Mend the network, make it reliable, and restart every crashed (not retired) node."""
    cluster.heal()
    cluster.net.config = NetConfig(min_delay=1, max_delay=2)
    for node in cluster.nodes.values():
        node.crash_at = None
        if not node.alive and not node.retired:
            cluster.start(node.node_id)


def check_liveness(
    cluster: Cluster,
    clients: LockClients,
    bound: int,
    settle: Callable[[Cluster], None] | None = None,
) -> int:
    """After healing, a leader must commit a fresh command and every member must apply it.

    `settle` runs before every step (the membership driver retiring removed nodes).
    """
    heal_all(cluster)
    start = cluster.now
    final_index = commit_final_command(cluster, clients, bound, settle)
    while any(n.applied < final_index for n in cluster.appliers()):
        if cluster.now - start >= bound:
            lagging = {n.node_id: n.applied for n in cluster.appliers()}
            raise SimInvariantError(
                "liveness", f"nodes did not all apply {final_index} in {bound} steps: {lagging}"
            )
        clients.propose_expiries(cluster)
        if settle is not None:
            settle(cluster)
        cluster.step()
    return cluster.now - start


def commit_final_command(
    cluster: Cluster,
    clients: LockClients,
    bound: int,
    settle: Callable[[Cluster], None] | None = None,
) -> int:
    proposed: dict[tuple[str, int], str] = {}
    deadline = cluster.now + bound
    while cluster.now < deadline:
        leader = cluster.leader()
        if leader is not None:
            key = (leader, cluster.nodes[leader].core().term)
            if key not in proposed:
                request_id = propose_final(cluster, leader, len(proposed))
                if request_id is not None:
                    proposed[key] = request_id
        done = _applied_request(cluster, set(proposed.values()))
        if done is not None:
            return done
        clients.propose_expiries(cluster)
        if settle is not None:
            settle(cluster)
        cluster.step()
    raise SimInvariantError(
        "liveness",
        f"no command committed within {bound} steps after healing "
        f"(leaders {cluster.leaders()}, tried {sorted(proposed)})",
    )


def propose_final(cluster: Cluster, leader: str, attempt: int) -> str | None:
    """Propose the liveness command; None while the leader hands over its leadership."""
    request_id = f"final-{attempt}"
    command: dict[str, Any] = {
        "op": "acquire",
        "request_id": request_id,
        "resource": "final",
        "owner": "liveness",
        "mode": "exclusive",
        "ttl_ms": 60_000,
        "wait_ms": 0,
        "now_ms": cluster.now_ms(leader),
    }
    try:
        cluster.propose(leader, [command])
    except NotLeader:
        return None
    return request_id


def _applied_request(cluster: Cluster, request_ids: set[str]) -> int | None:
    for index, outcomes in cluster.locks.outcomes.items():
        if any(getattr(o, "request_id", None) in request_ids for o in outcomes):
            return index
    return None


# -- shrinking ------------------------------------------------------------------------------

FAULT_KNOBS = ("partition_rate", "crash_rate", "torn_rate", "loss", "duplication")


def minimise(spec: SimSpec) -> tuple[SimSpec, SimFailureError | None]:
    """Turn fault classes off one at a time while the run still fails the same way."""
    failure = failure_of(spec)
    if failure is None:
        return spec, None
    for knob in FAULT_KNOBS:
        if not getattr(spec.profile, knob):
            continue
        off: dict[str, Any] = {knob: 0}
        candidate = replace(spec, profile=replace(spec.profile, **off))
        again = failure_of(candidate)
        if again is not None and again.invariant == failure.invariant:
            spec, failure = candidate, again
    shorter = replace(spec, steps=min(spec.steps, failure.step))
    again = failure_of(shorter)
    if again is not None and again.invariant == failure.invariant:
        spec, failure = shorter, again
    return spec, failure


def failure_of(spec: SimSpec) -> SimFailureError | None:
    """Run a spec; the failure it ends in, or None if it passes."""
    try:
        run_spec(spec)
    except SimFailureError as failure:
        return failure
    return None


# -- many seeds -----------------------------------------------------------------------------


@dataclass
class Sweep:
    """What a batch of seeds found: one line per failing seed, and totals for coverage."""

    seeds: int = 0
    failures: list[str] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: tuple[int, str | None, dict[str, int]]) -> None:
        _, failure, totals = outcome
        self.seeds += 1
        if failure is not None:
            self.failures.append(failure)
        self.totals.update(totals)

    def summary(self) -> str:
        """One line: the first failure, and how many other seeds failed."""
        if not self.failures:
            return f"{self.seeds} seeds passed"
        more = len(self.failures) - 1
        return self.failures[0] + (f" (and {more} more failing seeds)" if more else "")


def _run_for_sweep(seed: int) -> tuple[int, str | None, dict[str, int]]:
    """Picklable result for worker processes (exceptions with state do not pickle)."""
    try:
        stats = run_seed(seed)
    except SimFailureError as failure:
        return seed, str(failure), {"failed": 1}
    totals = dict(stats.events)
    totals.update(
        runs=1,
        steps=stats.steps,
        committed_entries=stats.committed,
        leader_terms=stats.leaders,
        grants=stats.grants,
        snapshots_installed=stats.snapshots_installed,
    )
    return seed, None, totals


def run_many(seeds: Sequence[int], workers: int = 1) -> Sweep:
    """Run seeds, in `workers` forked processes when above 1; results keep seed order."""
    sweep = Sweep()
    if workers <= 1 or len(seeds) < 2 * workers:
        for seed in seeds:
            sweep.add(_run_for_sweep(seed))
        return sweep
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for outcome in pool.map(_run_for_sweep, seeds, chunksize=8):
            sweep.add(outcome)
    return sweep


# -- command line ---------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    """`python tests/simulation/simharness.py SEED [--minimise]`: replay and print the trace."""
    seed = int(argv[0])
    spec = SimSpec.from_seed(seed)
    if "--minimise" in argv:
        spec, failure = minimise(spec)
    else:
        failure = failure_of(spec)
    print(spec)
    if failure is None:
        print(f"seed {seed} passed")
        return 0
    print(failure)
    print(failure.trace)
    return 1


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
