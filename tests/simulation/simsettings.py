"""The environment knobs of the simulation suite; see `conftest.py` for what each does.

Read at import time by the test modules, because seed counts decide parametrisation and
timeouts before any fixture runs.
"""

from __future__ import annotations

import os


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


def sim_seeds() -> int:
    return env_int("SIM_SEEDS", 2000)


def sim_seed_base() -> int:
    return env_int("SIM_SEED_BASE", 0)


def sim_lock_seeds() -> int:
    return env_int("SIM_LOCK_SEEDS", max(20, sim_seeds() // 10))


def sim_member_seeds() -> int:
    return env_int("SIM_MEMBER_SEEDS", max(20, sim_seeds() // 16))


def sim_workers() -> int:
    return env_int("SIM_WORKERS", len(os.sched_getaffinity(0)))


def sweep_timeout_s(seeds: int) -> int:
    """A whole sweep is one test item: let it take about a second per seed per core."""
    return max(120, int(2 * seeds / max(1, sim_workers())) + 60)


def sim_seed() -> int | None:
    """The one seed to replay, if `SIM_SEED` is set."""
    raw = os.environ.get("SIM_SEED", "").strip()
    return int(raw) if raw else None
