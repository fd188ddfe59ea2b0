"""What the benchmarks share: percentiles, free ports, the command line and the output.

Each benchmark is `python -m bench.<name>`: it parses `--duration`/`--quick`, runs its
`bench(args, workdir)` coroutine on uvloop in a temporary directory, and prints one JSON
document on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop

from distcluster_worker.runner.cluster import port_is_free

Bench = Callable[[argparse.Namespace, Path], Coroutine[Any, Any, dict[str, Any]]]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(values: list[float], q: float) -> float:
    """The percentile of durations in seconds, in milliseconds."""
    return round(percentile(values, q) * 1000.0, 2)


def make_log(name: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{name}] {message}", file=sys.stderr, flush=True)

    return log


def free_port_block(count: int) -> int:
    """The first of `count` consecutive free ports, for a cluster's nodes."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(15000, 30000 - count)
        if all(port_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def parse_args(
    name: str, description: str | None, argv: list[str] | None, *, duration: float, quick: str
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--duration", type=float, default=duration, help="seconds per case")
    parser.add_argument("--quick", action="store_true", help=quick)
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    return args


def main(name: str, args: argparse.Namespace, bench: Bench) -> int:
    """Run `bench` on uvloop in a fresh temporary directory and print its report."""
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as tmp:
        report = uvloop.run(bench(args, Path(tmp)))
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
