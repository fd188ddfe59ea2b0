"""Determinism: owners depend on the member set alone, in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import distcluster_worker
from distcluster_worker.ring import HashRing

MEMBERS = ["node1", "node2", "node3", "node-ä", "node 5"]
KEYS = [f"topic-{i}" for i in range(2000)] + ["", "ünïcode", "a" * 300]

_CHILD = """
import json, sys
from distcluster_worker.ring import HashRing
members, keys = json.loads(sys.stdin.read())
ring = HashRing(members)
print(json.dumps({"owners": [ring.owner(k) for k in keys],
                  "replicas": [ring.owners(k, 3) for k in keys[:200]],
                  "describe": ring.describe()}))
"""


def _in_subprocess(hash_seed: str) -> dict[str, object]:
    worker_dir = Path(distcluster_worker.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(worker_dir))
    result = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=json.dumps([MEMBERS, KEYS]),
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def test_same_owners_in_processes_with_different_hash_seeds() -> None:
    ring = HashRing(MEMBERS)
    here = {
        "owners": [ring.owner(k) for k in KEYS],
        "replicas": [ring.owners(k, 3) for k in KEYS[:200]],
        "describe": json.loads(json.dumps(ring.describe())),
    }
    first, second = _in_subprocess("1"), _in_subprocess("4242")
    assert first == here
    assert second == here


def test_insertion_order_does_not_matter() -> None:
    forward = HashRing(MEMBERS, vnodes=64)
    backward = HashRing(reversed(MEMBERS), vnodes=64)
    churned = HashRing(["x", *MEMBERS], vnodes=64)
    churned.remove("x")
    for ring in (backward, churned):
        assert [ring.owner(k) for k in KEYS] == [forward.owner(k) for k in KEYS]
        assert ring.describe() == forward.describe()
