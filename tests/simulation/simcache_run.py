"""One simulated run of the cache per seed: 3 nodes, faults, clients, checks, liveness.

Everything a run does is derived from its seed (`CacheSpec.from_seed`), and each concern
draws from its own random stream (`"<seed>:net"`, `":faults"`, `":clients"`, `":memory"`),
so `SIM_SEED=<seed>` alone replays a failure step for step. Each step: faults (partition,
heal, crash, restart, pause), then every message due is delivered (a paused node's
messages wait for it), then every running node ticks (timeouts, its home's writes,
renewals, expiry), then clients start operations; after the step the coherence checker
runs. After the last step the network heals, crashed nodes restart and paused ones resume,
and a final write and a read on every node must succeed within a bound (liveness). Then
the whole history of client operations must be linearizable, key by key.

Outside pytest: `python tests/simulation/simcache_run.py SEED` replays one seed and prints
the spec, the verdict and, on failure, the last events before it.
"""

from __future__ import annotations

import functools
import multiprocessing
import random
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from simcache_check import CacheInvariantError, check_coherence, check_history
from simcache_node import SimNode
from simcache_world import MAX_DRIFT_PERMILLE, TICK_MS, Clock, History, Memory, Msg, Timing
from simnet import NetConfig, SimNetwork

from distcluster_worker.cache_role.slots import key_slot
from distcluster_worker.coherence import InMemorySlots, Round, slot_name
from distcluster_worker.ring import HashRing

NODE_IDS = ("n1", "n2", "n3")
CACHE_SEED_BASE = 2_000_000
REPLAY_HINT = "replay with: SIM_SEED={seed} pytest tests/simulation/test_sim_cache.py -k replay"
LIVENESS_STEPS = 400


@functools.cache
def home_of(key: str) -> str:
    """The key's home (the holder of its slot) on the ring of the three nodes."""
    return _ring().owner(slot_name(key_slot(key)))


@functools.cache
def _ring() -> HashRing:
    return HashRing(NODE_IDS)


@functools.cache
def key_pool() -> tuple[str, ...]:
    """Four key names whose first three have three different homes, so every node is a
    home in every run, whatever the number of keys it uses."""
    names = [f"k{i}" for i in range(64)]
    firsts = [next(k for k in names if home_of(k) == node) for node in NODE_IDS]
    rest = [k for k in names if k not in firsts]
    return (*firsts, rest[0])


@dataclass(frozen=True)
class CacheProfile:
    """Per-step probabilities of each kind of fault."""

    name: str
    loss: float = 0.0
    max_delay: int = 3
    partition_rate: float = 0.0
    heal_rate: float = 0.08
    crash_rate: float = 0.0
    restart_rate: float = 0.08
    pause_rate: float = 0.0
    flaky: float = 0.0
    max_down: int = 1
    cuts: tuple[str, ...] = ("isolate", "one-way", "link", "deafen")
    redis_cut_rate: float = 0.0  # a node cut off from Redis (slot rounds, memory) a while


PROFILES = {
    "calm": CacheProfile("calm"),
    "lossy": CacheProfile("lossy", loss=0.15, max_delay=8),
    "partitions": CacheProfile("partitions", loss=0.02, max_delay=5, partition_rate=0.03),
    "crashes": CacheProfile("crashes", max_delay=4, crash_rate=0.02),
    "pauses": CacheProfile("pauses", max_delay=4, pause_rate=0.02),
    "flaky redis": CacheProfile("flaky redis", max_delay=3, flaky=0.1),
    # Two nodes cut from each other, both still reaching the third, for longer than
    # `dead_after_ms`: their views differ, and each may think it is a key's home.
    "asymmetric": CacheProfile(
        "asymmetric",
        loss=0.02,
        max_delay=4,
        partition_rate=0.02,
        heal_rate=0.01,
        cuts=("link",),
        redis_cut_rate=0.01,
    ),
    "chaos": CacheProfile(
        "chaos",
        loss=0.08,
        max_delay=10,
        partition_rate=0.02,
        crash_rate=0.01,
        pause_rate=0.01,
        flaky=0.03,
        max_down=2,
    ),  # fmt: skip
}
PROFILE_WEIGHTS = {
    "calm": 1, "lossy": 2, "partitions": 3, "crashes": 3, "pauses": 2, "flaky redis": 1,
    "chaos": 4,
}  # fmt: skip
# Drawn apart from the others, so that adding it left every other seed's spec as it was.
ASYMMETRIC_SHARE = 0.15


@dataclass(frozen=True)
class CacheSpec:
    """Everything one run depends on; `from_seed` derives it all from the seed."""

    seed: int
    profile: CacheProfile
    steps: int
    keys: tuple[str, ...]
    capacity: int
    policy: str
    clocks: tuple[Clock, ...]
    op_rate: float
    max_inflight: int
    read_fraction: float = 0.55
    timing: Timing = field(default_factory=Timing)

    @staticmethod
    def from_seed(seed: int) -> CacheSpec:
        rng = random.Random(f"{seed}:spec")
        names = sorted(PROFILE_WEIGHTS)
        name = rng.choices(names, weights=[PROFILE_WEIGHTS[n] for n in names])[0]
        if random.Random(f"{seed}:asymmetric").random() < ASYMMETRIC_SHARE:
            name = "asymmetric"
        drift = MAX_DRIFT_PERMILLE
        clocks = tuple(
            Clock(rng.randrange(1_000_000), rng.randint(1000 - drift, 1000 + drift))
            for _ in NODE_IDS
        )
        return CacheSpec(
            seed=seed,
            profile=PROFILES[name],
            steps=rng.randint(100, 180),
            keys=key_pool()[: rng.choice((2, 3, 4))],
            capacity=rng.choice((1, 2, 8)),
            policy=rng.choice(("lru", "lfu")),
            clocks=clocks,
            op_rate=rng.choice((0.1, 0.2, 0.35)),
            max_inflight=rng.choice((1, 2, 3)),
        )


class CacheSimFailureError(AssertionError):
    """A run broke an invariant; `str()` is the one-line reproduction."""

    def __init__(self, spec: CacheSpec, step: int, invariant: str, detail: str, trace: str):
        self.spec, self.step, self.invariant = spec, step, invariant
        self.detail, self.trace = detail, trace
        super().__init__(
            f"seed={spec.seed}: {invariant} (step {step}, {spec.profile.name}: "
            f"{' '.join(detail.split())[:300]}) — " + REPLAY_HINT.format(seed=spec.seed)
        )


class CacheSim:
    """The simulated cluster: nodes, network, memory, history, and the step loop."""

    def __init__(self, spec: CacheSpec) -> None:
        self.spec = spec
        self.timing = spec.timing
        self.t = 0
        p = spec.profile
        config = NetConfig(loss=p.loss, max_delay=p.max_delay)
        self.net = SimNetwork(NODE_IDS, random.Random(f"{spec.seed}:net"), config)
        self.memory = Memory(random.Random(f"{spec.seed}:memory"), p.flaky)
        self.history = History()
        self.counts: Counter[str] = Counter()
        self.trace: deque[tuple[int, str, str, str, str]] = deque(maxlen=80)
        self.clocks = dict(zip(NODE_IDS, spec.clocks, strict=True))
        self.incarnations = dict.fromkeys(NODE_IDS, 1)
        self.nodes: dict[str, SimNode | None] = {}
        self.paused: dict[str, int] = {}
        self._backlog: dict[str, list[Msg]] = {n: [] for n in NODE_IDS}
        self._local: list[Msg] = []
        self._calls = 0
        self.node_ids = NODE_IDS
        self.slot_store = InMemorySlots(spec.timing.slot_lease_ms)
        self._slot_rounds: list[tuple[int, str, int, Round]] = []
        self._slot_rng = random.Random(f"{spec.seed}:slots")
        self._redis_cut: dict[str, int] = {}  # node -> step its link to Redis heals
        for node_id in NODE_IDS:
            self.nodes[node_id] = SimNode(self, node_id, 1, self.clocks[node_id])

    # -- services for the nodes ----------------------------------------------------------

    @property
    def true_ms(self) -> int:
        """Redis' clock: the simulation's true time."""
        return self.t * TICK_MS

    def redis_cut(self, node_id: str) -> bool:
        return self._redis_cut.get(node_id, 0) > self.t

    def cut_from_redis(self, node_id: str, steps: int) -> None:
        self._redis_cut[node_id] = self.t + steps
        self.count("redis cut")
        self.trace.append((self.t, "REDIS CUT", node_id, str(steps), ""))

    def heal_redis(self) -> None:
        self._redis_cut.clear()

    def slot_round(self, node: SimNode, sent: Round) -> None:
        """Redis runs `node`'s round 0-3 steps from now (the answer comes back at once),
        or never (flaky Redis, or the node is cut off from it)."""
        if self.redis_cut(node.node_id) or self._slot_rng.random() < self.spec.profile.flaky:
            self.count("slot round failed")
            return
        due = self.t + self._slot_rng.randint(0, 3)
        self._slot_rounds.append((due, node.node_id, node.incarnation, sent))

    def _run_slot_rounds(self) -> None:
        due = [r for r in self._slot_rounds if r[0] <= self.t]
        self._slot_rounds = [r for r in self._slot_rounds if r[0] > self.t]
        for _, node_id, incarnation, sent in due:
            node = self.nodes[node_id]
            answers = self.slot_store.run(node_id, sent, self.true_ms)
            if node is not None and node.incarnation == incarnation:
                changes = node.slots.answered(sent, answers, node.now)
                self.count("slot acquired", len(changes.acquired))
                self.count("slot lost", len(changes.lost))

    def new_call_id(self) -> int:
        self._calls += 1
        return self._calls

    def send(self, msg: Msg) -> None:
        if msg.src == msg.dst:
            self._local.append(msg)
        else:
            self.net.send(msg, self.t)  # type: ignore[arg-type]

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def live_nodes(self) -> list[SimNode]:
        """Nodes up (paused ones included: they still hold their copies)."""
        return [n for n in self.nodes.values() if n is not None]

    def running(self, node_id: str) -> SimNode | None:
        node = self.nodes[node_id]
        return node if node is not None and node_id not in self.paused else None

    # -- faults --------------------------------------------------------------------------

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if node is None:
            return
        for op in node.ops.values():
            self.history.fail(op)
        self.nodes[node_id] = None
        self.paused.pop(node_id, None)
        self._backlog[node_id] = []
        self._local = [m for m in self._local if m.dst != node_id]
        self.net.drop_to(node_id)
        self.count("crash")
        self.trace.append((self.t, "CRASH", node_id, "", ""))

    def restart(self, node_id: str) -> None:
        if self.nodes[node_id] is not None:
            return
        self.incarnations[node_id] += 1
        incarnation = self.incarnations[node_id]
        self.nodes[node_id] = SimNode(self, node_id, incarnation, self.clocks[node_id])
        self.count("restart")
        self.trace.append((self.t, "RESTART", node_id, "", ""))

    def pause(self, node_id: str, steps: int) -> None:
        if self.nodes[node_id] is not None and node_id not in self.paused:
            self.paused[node_id] = self.t + steps
            self.count("pause")
            self.trace.append((self.t, "PAUSE", node_id, str(steps), ""))

    # -- the step loop -------------------------------------------------------------------

    def step(self) -> None:
        self.t += 1
        for node_id in [n for n, until in self.paused.items() if until <= self.t]:
            del self.paused[node_id]
            backlog, self._backlog[node_id] = self._backlog[node_id], []
            for msg in backlog:
                self._deliver(msg)
        local, self._local = self._local, []
        for msg in [*self.net.due(self.t), *local]:
            self._deliver(msg)  # type: ignore[arg-type]
        self._run_slot_rounds()
        for node_id in NODE_IDS:
            node = self.running(node_id)
            if node is not None:
                node.tick()

    def _deliver(self, msg: Msg) -> None:
        node = self.nodes[msg.dst]
        if node is None:
            self.count("dropped at a crashed node")
            return
        if msg.dst in self.paused:
            self._backlog[msg.dst].append(msg)
            return
        if msg.kind != "heartbeat":
            self.trace.append((self.t, msg.kind, msg.src, msg.dst, str(msg.body.get("key", ""))))
        node.deliver(msg)

    def format_trace(self) -> str:
        lines = [f"  t={t} {kind} {src}->{dst} {key}" for t, kind, src, dst, key in self.trace]
        return "last events:\n" + "\n".join(lines)


# -- faults and clients -----------------------------------------------------------------------


class Faults:
    def __init__(self, rng: random.Random, profile: CacheProfile) -> None:
        self.rng = rng
        self.p = profile

    def step(self, sim: CacheSim) -> None:
        p, rng = self.p, self.rng
        if rng.random() < p.partition_rate:
            self._partition(sim)
        elif sim.net.describe_cuts() != "none" and rng.random() < p.heal_rate:
            sim.net.heal()
            sim.count("heal")
        down = [n for n in NODE_IDS if sim.nodes[n] is None]
        if rng.random() < p.crash_rate and len(down) < p.max_down:
            sim.crash(rng.choice([n for n in NODE_IDS if sim.nodes[n] is not None]))
        for node_id in down:
            if rng.random() < p.restart_rate:
                sim.restart(node_id)
        if rng.random() < p.pause_rate:
            sim.pause(rng.choice(NODE_IDS), rng.randint(3, 60))
        if p.redis_cut_rate and rng.random() < p.redis_cut_rate:
            sim.cut_from_redis(rng.choice(NODE_IDS), rng.randint(20, 80))

    def _partition(self, sim: CacheSim) -> None:
        rng, net = self.rng, sim.net
        kind = rng.choice(self.p.cuts)
        if rng.random() < 0.6:
            net.heal()
        a, b = rng.sample(NODE_IDS, 2)
        if kind == "isolate":
            net.isolate(a)
        elif kind == "one-way":
            net.cut_one_way(a, b)
        elif kind == "deafen":
            net.deafen(a)
        else:
            net.cut(a, b)
        sim.count(f"partition {kind}")
        sim.trace.append((sim.t, "PARTITION", kind, net.describe_cuts(), ""))


class Clients:
    """Random reads, writes and deletes on every running node, a few in flight each."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.written = 0

    def step(self, sim: CacheSim) -> None:
        rng, spec = self.rng, sim.spec
        for node_id in NODE_IDS:
            node = sim.running(node_id)
            if node is None or len(node.ops) >= spec.max_inflight:
                continue
            if rng.random() >= spec.op_rate:
                continue
            key = spec.keys[min(int(rng.expovariate(1.0)), len(spec.keys) - 1)]
            roll = rng.random()
            if roll < spec.read_fraction:
                node.client_read(key)
            elif roll < spec.read_fraction + (1 - spec.read_fraction) * 0.8:
                self.written += 1
                node.client_write(key, f"{node_id}.{self.written}")
            else:
                node.client_write(key, None)


# -- a run -------------------------------------------------------------------------------------


def run_spec(spec: CacheSpec) -> Counter[str]:
    """Run one simulation; raises `CacheSimFailureError` on any violation or core exception."""
    sim = CacheSim(spec)
    faults = Faults(random.Random(f"{spec.seed}:faults"), spec.profile)
    clients = Clients(random.Random(f"{spec.seed}:clients"))
    try:
        for _ in range(spec.steps):
            faults.step(sim)
            sim.step()
            clients.step(sim)
            check_coherence(sim)
        check_liveness(sim)
        for node in sim.live_nodes():
            for op in node.ops.values():
                sim.history.fail(op)
        verdict = check_history(sim.history.completed())
        if not verdict.ok:
            raise CacheInvariantError("not linearizable", verdict.describe())
    except CacheInvariantError as exc:
        raise _failure(sim, exc.invariant, exc.detail) from exc
    except Exception as exc:  # noqa: BLE001 - any exception from a core is a finding
        raise _failure(sim, f"raised {type(exc).__name__}", str(exc)) from exc
    sim.counts.update(ops=len(sim.history.ops), steps=sim.t, runs=1)
    return sim.counts


def _failure(sim: CacheSim, invariant: str, detail: str) -> CacheSimFailureError:
    return CacheSimFailureError(sim.spec, sim.t, invariant, detail, sim.format_trace())


def heal_all(sim: CacheSim) -> None:
    sim.net.heal()
    sim.net.config = NetConfig(min_delay=1, max_delay=2)
    sim.memory.flaky = 0.0
    sim.heal_redis()
    sim.paused = {n: sim.t for n in sim.paused}  # resume at the next step
    for node_id in NODE_IDS:
        sim.restart(node_id)


def check_liveness(sim: CacheSim, bound: int = LIVENESS_STEPS) -> None:
    """After healing, a write on the first key and then a read of it on every node must
    succeed (retried after a 503, as a client would) within `bound` steps."""
    heal_all(sim)
    key, deadline = sim.spec.keys[0], sim.t + bound
    pending = {"write": None, **dict.fromkeys(NODE_IDS)}
    succeeded: set[str] = set()
    while len(succeeded) < 1 + len(NODE_IDS):
        if sim.t >= deadline:
            raise CacheInvariantError(
                "liveness", f"after healing only {sorted(succeeded)} succeeded in {bound} steps"
            )
        for name in ["write", *NODE_IDS]:
            op = pending[name]
            if op is not None and op.done:
                succeeded.add(name)
            if name in succeeded or (op is not None and not op.failed):
                continue
            if name != "write" and "write" not in succeeded:
                continue
            node = sim.running("n1" if name == "write" else name)
            if node is None or len(node.ops) > 8:
                continue
            before = len(sim.history.ops)
            if name == "write":
                node.client_write(key, f"final.{sim.spec.seed}")
            else:
                node.client_read(key)
            pending[name] = sim.history.ops[before]
        sim.step()
        check_coherence(sim)


def run_seed(seed: int) -> Counter[str]:
    return run_spec(CacheSpec.from_seed(seed))


# -- many seeds ---------------------------------------------------------------------------------


@dataclass
class CacheSweep:
    seeds: int = 0
    failures: list[str] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        if not self.failures:
            return f"{self.seeds} seeds passed"
        more = len(self.failures) - 1
        return self.failures[0] + (f" (and {more} more failing seeds)" if more else "")


def _run_for_sweep(seed: int) -> tuple[str | None, dict[str, int]]:
    try:
        return None, dict(run_seed(seed))
    except CacheSimFailureError as failure:
        return str(failure), {"failed": 1}


def run_many(seeds: Sequence[int], workers: int = 1) -> CacheSweep:
    """Run seeds, in `workers` forked processes when above 1."""
    sweep = CacheSweep()
    if workers <= 1 or len(seeds) < 4 * workers:
        outcomes = map(_run_for_sweep, seeds)
        for failure, totals in outcomes:
            _add(sweep, failure, totals)
        return sweep
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for failure, totals in pool.map(_run_for_sweep, seeds, chunksize=16):
            _add(sweep, failure, totals)
    return sweep


def _add(sweep: CacheSweep, failure: str | None, totals: dict[str, int]) -> None:
    sweep.seeds += 1
    if failure is not None:
        sweep.failures.append(failure)
    sweep.totals.update(totals)


def main(argv: Sequence[str]) -> int:
    """`python tests/simulation/simcache_run.py SEED`: replay one seed, print the trace."""
    spec = CacheSpec.from_seed(int(argv[0]))
    print(spec)
    try:
        counts = run_spec(spec)
    except CacheSimFailureError as failure:
        print(failure)
        print(failure.trace)
        return 1
    print(f"seed {spec.seed} passed: {dict(counts)}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
