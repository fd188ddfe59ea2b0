"""Settings and reporting for the deterministic simulation suite.

Environment knobs (all optional):

* `SIM_SEEDS` — how many seeds the Raft sweep runs (default 2000); `SIM_SEED_BASE` moves
  the window (default 0) so a nightly job can explore fresh seeds.
* `SIM_LOCK_SEEDS` — seeds for the lock-heavy sweep (default `SIM_SEEDS // 10`, at least 20).
* `SIM_MEMBER_SEEDS` — seeds for the membership-change sweep (default `SIM_SEEDS // 16`, at
  least 20; each run is longer: six nodes, 300-500 steps).
* `SIM_SEED` — replay exactly this seed (`pytest tests/simulation -k replay`).
* `SIM_WORKERS` — processes for the sweeps (default: the CPUs this process may use).

The sweeps print what they exercised (crashes, torn Readys, partitions, snapshots) in the
terminal summary, so a quiet run that tested nothing is visible.

Outside pytest, `python tests/simulation/simharness.py SEED [--minimise]` replays one seed
and prints the node states, recent faults and the last events before a violation;
`--minimise` first turns off every fault class the failure does not need.

The helpers: `simnet` (the packet simulator), `simcluster` (nodes driven like the real
shell, over in-memory stable storage), `simcheck` (Raft and lock checkers), `simworkload`
(lock clients), `simharness` (fault profiles, one run per seed, liveness, sweeps),
`simscenario` (verbs for hand-written scenarios), `simmembers` (membership changes as the
shell and operator make them) and `simsettings` (these knobs).
"""

from __future__ import annotations

from collections import Counter

import pytest
from simsettings import sim_lock_seeds, sim_member_seeds, sim_seed_base, sim_seeds, sim_workers

SWEEPS = pytest.StashKey[list[tuple[str, Counter[str]]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SWEEPS] = []


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"simulation: SIM_SEEDS={sim_seeds()} SIM_SEED_BASE={sim_seed_base()} "
        f"SIM_LOCK_SEEDS={sim_lock_seeds()} SIM_MEMBER_SEEDS={sim_member_seeds()} "
        f"SIM_WORKERS={sim_workers()}"
    )


@pytest.fixture
def sweep_log(request: pytest.FixtureRequest) -> list[tuple[str, Counter[str]]]:
    """Where a sweep test leaves its totals for the terminal summary."""
    return request.config.stash[SWEEPS]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    sweeps = terminalreporter.config.stash.get(SWEEPS, [])
    if not sweeps:
        return
    terminalreporter.section("simulation coverage")
    for name, totals in sweeps:
        shown = ", ".join(f"{key}={totals[key]}" for key in sorted(totals))
        terminalreporter.write_line(f"{name}: {shown}")
